"""The typed settings of each config group (pydantic models): what the settings check validates
before anything loads (settings_check.py) and what the commands then hand down to the engines,
so an engine reads ``settings.train.lr``, never ``cfg.train.get("lr", default)``.

conf/ holds every default (what ``--cfg job`` shows) and the schema holds none: a key every
composed config carries is required here. A group may carry more keys than its schema (a new
method's option); they pass through as extra fields. A method's own options are typed by the
method itself (``Method.settings_type``: methods/*.py), an adapter's here (``ADAPTER_SETTINGS``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from grun_cli.errors import HALF_PRECISION, HALF_PRECISION_ERROR, GrunError

#: transformers' SchedulerType values (tests/test_settings_check.py keeps the list in step)
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
              "warmup_stable_decay", "greedy")

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Count = Annotated[int, Field(ge=1)]
Beta = Annotated[float, Field(ge=0, lt=1)]
Steps = Annotated[int, Field(ge=0)]
DType = Literal["auto", "float32", "bfloat16", "float16"]

G = TypeVar("G", bound=BaseModel)


class SettingsError(GrunError):
    """Several settings problems, reported together, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Group(BaseModel):
    """One config group's types and ranges, without defaults (conf/ holds them)."""

    model_config = ConfigDict(extra="allow", strict=False, frozen=True)
    _given: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_given(cls, values: Any, handler: Any) -> Any:
        model = handler(values)
        if isinstance(values, Mapping):
            model._given = dict(values)
        return model

    def plain(self) -> dict[str, Any]:
        """The settings as plain data, as the config gave them where unchanged (its key order,
        ``32`` staying ``32`` rather than the validated ``32.0``), so what is saved from them
        (an adapter's grun_adapter.json) reads as the config did; a value changed since
        (``model_copy(update=...)``) or added appears as it is now."""
        now = self.model_dump(mode="json")
        given = {k: v for k, v in self._given.items() if k in now}
        kept = {k: v if v == now[k] else now[k] for k, v in given.items()}
        return {**kept, **{k: v for k, v in now.items() if k not in given}}


# -- training --------------------------------------------------------------------------------
class Train(Group):
    lr: Positive
    epochs: NonNegative
    max_steps: int
    batch_size: Count
    grad_accum: Count
    warmup: Steps | Annotated[float, Field(ge=0, lt=1)]
    scheduler: Literal[SCHEDULERS]  # type: ignore[valid-type]
    weight_decay: NonNegative
    adam_betas: tuple[Beta, Beta]
    max_grad_norm: Positive
    logging_steps: Count
    save_steps: Steps
    bf16: bool
    gradient_checkpointing: bool
    master_weights: Literal["fp32", "none"]

    @model_validator(mode="after")
    def _trains_something(self) -> Train:
        if self.max_steps < 1 and self.epochs <= 0:
            raise ValueError("train.epochs=0 with no train.max_steps trains nothing (the model would be saved "
                             "untrained as a result); give train.epochs > 0 or train.max_steps >= 1")
        return self


class UnlearnTrain(Train):
    """``grun unlearn``'s training: also where the frozen starting model's values come from."""

    reference: Literal["cached", "live"]
    reference_max_gb: NonNegative


# -- adapters --------------------------------------------------------------------------------
class AdapterSettings(Group):
    kind: str
    unlearn_warmup_steps: Steps


class GrunSettings(AdapterSettings):
    kind: Literal["grun"]
    layers: list[int] | int | None
    rank: Count
    gate: Literal["linear", "mlp"]
    gate_weight: NonNegative
    dtype: DType
    cache_prefix: Literal["auto", True, False]
    cache_prefix_max_gb: NonNegative
    gate_negatives: list[str]
    combine: Literal["sum", "official"]
    combine_coeff: float
    combine_bias: float

    @field_validator("dtype")
    @classmethod
    def _edit_dtype_has_kernels(cls, name: str) -> str:
        if name in HALF_PRECISION:
            raise ValueError(HALF_PRECISION_ERROR.format(name=name))
        return name


class LoraSettings(AdapterSettings):
    kind: Literal["lora"]
    rank: Count
    alpha: Positive
    dropout: Beta
    target_modules: str | list[str]


class FullSettings(AdapterSettings):
    kind: Literal["full"]
    layers: list[int] | int | None
    modules: list[str] | None
    freeze: list[str]


ADAPTER_SETTINGS: dict[str, type[AdapterSettings]] = {
    "grun": GrunSettings, "lora": LoraSettings, "full": FullSettings}


# -- methods (each method types its own options: Method.settings) -----------------------------
class MethodSettings(Group):
    name: str
    forget_weight: NonNegative
    retain_weight: NonNegative


class NllMethodSettings(MethodSettings):
    """A method whose terms are answer NLLs (all but RMU)."""

    reduction: Literal["mean", "sum"]


# -- the rest ----------------------------------------------------------------------------------
class SequenceSettings(Group):
    requests: Annotated[int, Field(ge=1)] | list[str] | None
    split: str | None
    retain_split: str
    protocol: Literal["stacked", "official"]


class Probe(Group):
    max_rows: Steps
    batch_size: Count


class ModelSettings(Group):
    name: str
    max_length: Count
    dtype: DType
    trust_remote_code: bool
    weights: Literal["auto", "hub", "packaged"]
    template: str | dict[str, Any] | None
    templates: dict[str, dict[str, Any]]

    @model_validator(mode="after")
    def _template_is_offered(self) -> ModelSettings:
        if isinstance(self.template, str) and self.template not in self.templates:
            offered = f"one of {', '.join(self.templates)}" if self.templates else "prompt / answer / add_bos"
            raise ValueError(f"model.template={self.template} is not a template of model={self.name}; give "
                             f"{offered}")
        return self


class Run(Group):
    seed: Steps


class UnlearnRun(Run):
    pairing: Literal["random", "fixed"]


@dataclass(frozen=True)
class Settings:
    """A command's validated settings, typed: what the command hands down to its engines
    (``make_adapter(model, settings.adapter)``, ``training_arguments(settings.train, ...)``,
    ``make_method(settings.method)``). A group the command does not have is None."""

    seed: int
    model: ModelSettings | None = None
    train: Train | None = None
    adapter: AdapterSettings | None = None
    method: MethodSettings | None = None
    probe: Probe | None = None
    sequence: SequenceSettings | None = None


# -- validation ---------------------------------------------------------------------------------
def _where(loc: tuple[Any, ...], prefix: str) -> str:
    """The setting's dotted name, without pydantic's type tags (``list[int]``, ``function-...``)."""
    return ".".join([prefix, *(str(p) for p in loc if not str(p).startswith("function-") and "[" not in str(p))]
                    ).strip(".")


def schema_problems(error: ValidationError, prefix: str) -> Iterator[str]:
    """A pydantic error as one line per setting, named as on the command line."""
    for err in error.errors(include_url=False):
        key = _where(tuple(p for p in err["loc"] if not isinstance(p, str) or p not in
                           ("int", "float", "constrained-int", "constrained-float", "tuple")), prefix)
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "value_error":  # a rule's own sentence
            yield msg
            continue
        got = err.get("input")
        shown = f"={got}" if isinstance(got, (str, int, float, bool)) and key else ""
        yield f"{key}{shown}: {msg[0].lower()}{msg[1:]}"


def dedupe(lines: Iterator[str]) -> list[str]:
    """Union types report each alternative; keep one line per setting (the first, and none for
    a setting whose item was already named: ``adapter.layers.0=x`` says it)."""
    seen: dict[str, str] = {}
    for line in lines:
        head = line.split(":", 1)[0]
        name = head.split("=", 1)[0]
        if head in seen or any(other.split("=", 1)[0].startswith(f"{name}.") for other in seen):
            continue
        seen[head] = line
    return list(seen.values())


def parse(model: type[G], values: Mapping[str, Any], prefix: str) -> G:
    """``values`` (one config group, plain data) as ``model``; a SettingsError naming each bad
    setting as ``prefix.key``."""
    try:
        return model.model_validate(dict(values))
    except ValidationError as e:
        raise SettingsError(dedupe(schema_problems(e, prefix))) from None
