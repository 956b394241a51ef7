"""Every setting of a composed config checked before anything loads: types and ranges (a typed
schema per config group, pydantic), the model's depth (read from its config file, never its
weights), the rules between groups, and the files the run will read. All problems at once, one
line each, in milliseconds — not after minutes of loading, fine-tuning a target or training.

The schema covers the keys grun reads; a group may carry more (a new method's options) and
those pass through to the code that reads them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from grun_cli.errors import HALF_PRECISION, HALF_PRECISION_ERROR, GrunError

#: transformers' SchedulerType values (tests/test_settings_check.py keeps the list in step)
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
              "warmup_stable_decay", "greedy")

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Count = Annotated[int, Field(ge=1)]
Beta = Annotated[float, Field(ge=0, lt=1)]


class SettingsError(GrunError):
    """Several settings problems, reported together, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Group(BaseModel):
    """One config group's types and ranges. No defaults here: conf/ holds every default (what
    `--cfg job` shows), so a key every composed config carries is required; a field keeps a
    default only where some commands' configs lack the key (``= None``: a method's own option)."""

    model_config = ConfigDict(extra="allow", strict=False)


class Train(_Group):
    lr: Positive
    epochs: NonNegative
    max_steps: int
    batch_size: Count
    grad_accum: Count
    warmup: Annotated[int, Field(ge=0)] | Annotated[float, Field(ge=0, lt=1)]
    scheduler: Literal[SCHEDULERS]  # type: ignore[valid-type]
    weight_decay: NonNegative
    adam_betas: tuple[Beta, Beta]
    max_grad_norm: Positive
    logging_steps: Count
    save_steps: Annotated[int, Field(ge=0)]
    bf16: bool
    gradient_checkpointing: bool
    master_weights: Literal["fp32", "none"]
    reference: Literal["cached", "live"] = "cached"
    reference_max_gb: NonNegative = 8.0

    @model_validator(mode="after")
    def _trains_something(self) -> Train:
        if self.max_steps < 1 and self.epochs <= 0:
            raise ValueError("train.epochs=0 with no train.max_steps trains nothing (the model would be saved "
                             "untrained as a result); give train.epochs > 0 or train.max_steps >= 1")
        return self


class GrunSettings(_Group):
    kind: Literal["grun"]
    layers: list[int] | int | None
    rank: Count
    gate: Literal["linear", "mlp"]
    gate_weight: NonNegative
    unlearn_warmup_steps: Annotated[int, Field(ge=0)]
    dtype: Literal["auto", "float32", "bfloat16", "float16"]
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


class SequenceSettings(_Group):
    requests: Annotated[int, Field(ge=1)] | list[str] | None
    split: str | None
    retain_split: str
    protocol: Literal["stacked", "official"]


class LoraSettings(_Group):
    kind: Literal["lora"]
    rank: Count
    alpha: Positive
    dropout: Beta
    unlearn_warmup_steps: Annotated[int, Field(ge=0)]


class FullSettings(_Group):
    kind: Literal["full"]
    layers: list[int] | None
    freeze: list[str]
    unlearn_warmup_steps: Annotated[int, Field(ge=0)]


ADAPTERS: dict[str, type[_Group]] = {"grun": GrunSettings, "lora": LoraSettings, "full": FullSettings}


class MethodSettings(_Group):
    name: str
    forget_weight: NonNegative
    retain_weight: NonNegative
    beta: Positive | None = None
    delta: float | None = None
    steering_coeff: Positive | None = None
    layer: int | None = None
    positions: Literal["all", "labels"] | None = None
    control: Literal["shared", "per_corpus"] | None = None
    reduction: Literal["mean", "sum"] = "mean"
    pool: bool = False


class Probe(_Group):
    max_rows: Annotated[int, Field(ge=0)]
    batch_size: Count = 32


class ModelSettings(_Group):
    name: str
    max_length: Count
    dtype: Literal["auto", "float32", "bfloat16", "float16"]
    trust_remote_code: bool
    weights: Literal["auto", "hub", "packaged"] = "auto"
    template: str | dict[str, Any] | None = None
    templates: dict[str, dict[str, Any]] = {}

    @model_validator(mode="after")
    def _template_is_offered(self) -> ModelSettings:
        if isinstance(self.template, str) and self.template not in self.templates:
            offered = f"one of {', '.join(self.templates)}" if self.templates else "prompt / answer / add_bos"
            raise ValueError(f"model.template={self.template} is not a template of model={self.name}; give "
                             f"{offered}")
        return self


class Run(_Group):
    seed: Annotated[int, Field(ge=0)]


class UnlearnRun(Run):
    pairing: Literal["random", "fixed"]


def _where(loc: tuple[Any, ...], prefix: str) -> str:
    return ".".join([prefix, *(str(p) for p in loc if not str(p).startswith("function-"))]).strip(".")


def _schema(cfg: Mapping[str, Any], model: type[BaseModel], prefix: str) -> Iterator[str]:
    try:
        model.model_validate(dict(cfg))
    except ValidationError as e:
        for err in e.errors(include_url=False):
            key = _where(tuple(p for p in err["loc"] if not isinstance(p, str) or p not in
                               ("int", "float", "constrained-int", "constrained-float", "tuple")), prefix)
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "value_error":  # a rule's own sentence
                yield msg
                continue
            got = err.get("input")
            shown = f"={got}" if isinstance(got, (str, int, float, bool)) and key else ""
            yield f"{key}{shown}: {msg[0].lower()}{msg[1:]}"


def _dedupe(lines: Iterator[str]) -> list[str]:
    """Union types report each alternative; keep one line per setting."""
    seen: dict[str, str] = {}
    for line in lines:
        seen.setdefault(line.split(":", 1)[0], line)
    return list(seen.values())


# -- the model's depth, from its config file ------------------------------------------------
def model_depth(model: Mapping[str, Any]) -> int | None:
    """Decoder blocks of the model to be loaded, without loading it: the tiny model's
    architecture, a local checkpoint's config.json, the Hub cache's copy, else the model
    config's own ``num_layers`` (a known Hub model not downloaded yet). None when unknown."""
    arch = model.get("architecture") or {}
    path = model.get("name_or_path")
    if not path:
        layers = arch.get("num_layers")
        return int(layers) if isinstance(layers, int) else None
    stated = int(model["num_layers"]) if isinstance(model.get("num_layers"), int) else None
    config = Path(str(path)).expanduser() / "config.json"
    if not config.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(str(path), "config.json", revision=model.get("revision"))
        except Exception:  # not a Hub id either: the loader says so
            return stated
        if not isinstance(cached, str):
            return stated
        config = Path(cached)
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return stated  # the loader reports an unreadable checkpoint with its own message
    layers = data.get("num_hidden_layers") or (data.get("text_config") or {}).get("num_hidden_layers")
    return int(layers) if isinstance(layers, int) else stated


def _blocks(key: str, value: Any, depth: int | None) -> Iterator[str]:
    blocks = [value] if isinstance(value, int) else list(value or [])
    if depth is None or not all(isinstance(b, int) for b in blocks):
        return
    bad = [b for b in blocks if not 0 <= b < depth]
    if bad:
        example = depth - 1 if isinstance(value, int) else f"[{depth - 1}]"
        yield (f"{key}={value}: block{'s' if len(bad) > 1 else ''} {bad} outside the model's decoder blocks "
               f"0..{depth - 1}; e.g. {key}={example}")
    elif len(set(blocks)) != len(blocks):
        yield f"{key}={blocks}: a block is listed twice; give distinct blocks"


def _weights(model: Mapping[str, Any]) -> Iterator[str]:
    """A model with a packaged copy (model=smollm2) whose weights can't be had at all."""
    from grun_cli.models.packaged import missing_message, packaged_file, uses_packaged

    if uses_packaged(model) and packaged_file(model["offline_copy"]) is None:
        yield missing_message(model)


# -- the checks of each command ---------------------------------------------------------------
def _common(cfg: Mapping[str, Any], run: type[Run]) -> Iterator[str]:
    yield from _schema({"seed": cfg.get("seed", 42), **({"pairing": cfg["pairing"]} if "pairing" in cfg else {})},
                       run, "")
    if isinstance(cfg.get("model"), Mapping):
        yield from _schema(cfg["model"], ModelSettings, "model")
        yield from _weights(cfg["model"])
    if isinstance(cfg.get("train"), Mapping):
        yield from _schema(cfg["train"], Train, "train")


def _unlearn(cfg: Mapping[str, Any]) -> Iterator[str]:
    yield from _common(cfg, UnlearnRun)
    adapter, method, data = cfg.get("adapter") or {}, cfg.get("method") or {}, cfg.get("data") or {}
    kind = adapter.get("kind")
    if kind in ADAPTERS:
        yield from _schema(adapter, ADAPTERS[kind], "adapter")
    yield from _schema(method, MethodSettings, "method")
    if isinstance(cfg.get("probe"), Mapping):
        yield from _schema(cfg["probe"], Probe, "probe")
    depth = model_depth(cfg.get("model") or {})
    if kind == "grun":
        yield from _blocks("adapter.layers", adapter.get("layers") or (cfg.get("model") or {}).get("grun_layers"),
                           depth)
    if kind == "full" and adapter.get("layers") is not None:
        yield from _blocks("adapter.layers", adapter.get("layers"), depth)
    if method.get("layer") is not None:
        yield from _blocks("method.layer", method.get("layer"), depth)
    from grun_cli.methods import METHODS

    cls = METHODS.get(method.get("name")) if method.get("name") in METHODS else None
    if cls is not None and getattr(cls, "needs_idk", False) and data.get("kind") == "text":
        yield (f"method={method.get('name')} answers forget questions with refusals and needs QA data (data=tofu "
               f"or synthetic), not the text corpora of data={data.get('name')}; use method=rmu, npo or gd")
    evaluation = cfg.get("eval") or {}
    if evaluation.get("enabled", True) and evaluation.get("kind", "tofu") == "tofu" and data.get("kind") == "text":
        yield (f"eval=tofu needs QA data (data=tofu or synthetic), not data={data.get('name')}; use eval=wmdp "
               "(or eval.enabled=false)")
    if evaluation.get("enabled", True):
        yield from _attacks(evaluation, kind)
    yield from _at_steps(cfg, evaluation)
    if kind == "grun" and adapter.get("gate_negatives"):
        from grun_cli.data.gate_negatives import conflicts, negative_file

        for spec in adapter.get("gate_negatives") or []:
            try:
                negative_file(str(spec), (cfg.get("paths") or {}).get("data_dir"))
            except GrunError as e:
                yield str(e)
        yield from conflicts([str(s) for s in adapter.get("gate_negatives") or []], evaluation)
    sequence = cfg.get("sequence")
    if isinstance(sequence, Mapping):
        yield from _schema(sequence, SequenceSettings, "sequence")
        yield from _sequence(cfg, sequence)
        if sequence.get("protocol") == "official" and kind != "grun":
            yield (f"sequence.protocol=official trains each request's GRUN edit alone and combines the edits; "
                   f"adapter={kind} trains one set of weights further (use sequence.protocol=stacked)")
    if cfg.get("base_run"):
        yield from _base_run(cfg)
    idk = method.get("idk_answers")
    if idk and not Path(str(idk)).expanduser().is_file():
        yield (f"method.idk_answers={idk} does not exist; give a file with one answer per line, or null for "
               "the built-in list")
    yield from _files(cfg)
    yield from _data(cfg, ["forget", "retain"])


def _sequence(cfg: Mapping[str, Any], sequence: Mapping[str, Any]) -> Iterator[str]:
    """A sequence's requests resolved against the data (every request forgets someone new)."""
    from grun_cli.unlearning.sequence.requests import is_sequence, plan, union_split

    if not is_sequence(cfg):
        return
    data = cfg.get("data") or {}
    try:
        from grun_cli.data import make_source

        if data.get("kind") == "text":  # requests are forget corpora, named in data.forget_corpora
            plan(sequence, make_source(data, data_root=(cfg.get("paths") or {}).get("data_dir")))
            return
        split = union_split(sequence)
        source = make_source({**dict(data), "forget_split": split}, data_root=(cfg.get("paths") or {}).get("data_dir"))
        if data.get("name") != "synthetic" and getattr(source, "local_dir", None) is None:
            return  # a Hub data set: checked once it is downloaded
        plan(sequence, source)
        retain = str(sequence.get("retain_split") or "full")
        source.rows(retain)
    except GrunError as e:
        yield str(e)


def _base_run(cfg: Mapping[str, Any]) -> Iterator[str]:
    """``base_run=``: a complete unlearn run with this request's model, data and adapter kind,
    and a forget split that adds someone new."""
    from grun_cli.unlearning.sequence.base_run import BaseRun
    from grun_cli.unlearning.sequence.requests import next_request

    try:
        base = BaseRun.read(cfg["base_run"])
    except GrunError as e:
        yield str(e)
        return
    problems = list(base.mismatches(cfg))
    yield from problems
    if problems:
        return
    data = cfg.get("data") or {}
    try:
        split = str(data.get("forget_split"))
        union = base.union_split(split)
        from grun_cli.data import make_source

        source = make_source({**dict(data), "forget_split": union}, data_root=(cfg.get("paths") or {}).get("data_dir"))
        if data.get("name") != "synthetic" and getattr(source, "local_dir", None) is None:
            return  # a Hub data set: checked once it is downloaded
        next_request(source, split, base.requests(source), union)
    except GrunError as e:
        yield str(e)


def _finetune(cfg: Mapping[str, Any]) -> Iterator[str]:
    yield from _common(cfg, Run)
    yield from _data(cfg, [str(cfg.get("split", "full")), *[str(s) for s in cfg.get("extra_splits") or []]])


def _data(cfg: Mapping[str, Any], splits: list[str]) -> Iterator[str]:
    """The data files the run will read, each row checked (JSON, the fields it needs), when they
    are local files (a Hub data set is checked as it downloads)."""
    from grun_cli.data import make_source

    data = cfg.get("data")
    if not isinstance(data, Mapping):
        return
    try:
        source = make_source(data, data_root=(cfg.get("paths") or {}).get("data_dir"))
        if data.get("name") != "synthetic" and getattr(source, "local_dir", None) is None:
            return
        for split in splits:
            source.rows(source.resolve(split))
    except GrunError as e:
        yield str(e)


def _eval(cfg: Mapping[str, Any]) -> Iterator[str]:
    yield from _schema({"seed": cfg.get("seed", 42)}, Run, "")
    run = cfg.get("run")
    if run is not None and not str(run).strip():
        yield ("run= is empty (the shell may have expanded an unset variable); give a run folder, or leave run= "
               "out to evaluate model=")
    adapter = None
    if run is not None and str(run).strip():  # the folder's card, markers and checksums, before anything loads
        from grun_cli.train.run_card import read_run_card, trained_adapter

        try:
            adapter = trained_adapter(read_run_card(Path(str(run)).expanduser()))
        except GrunError as e:
            yield str(e)
    yield from _attacks(cfg.get("eval") or {}, adapter)
    yield from _files(cfg)


def _attacks(evaluation: Mapping[str, Any], adapter: str | None) -> Iterator[str]:
    """eval.attacks: known names, possible for this evaluation and adapter, sound settings.
    (``grun eval run=`` may take another data set's evaluation from the run: checked again
    against it before any model loads.)"""
    from grun_cli.eval.attacks import problems

    names = evaluation.get("attacks") or []
    if not isinstance(names, (list, tuple)):
        yield f"eval.attacks={names!r}: give a list, e.g. eval.attacks=[quantize_4bit,edit_off]"
        return
    yield from problems(names, evaluation.get("attack_settings"), str(evaluation.get("kind", "tofu")), adapter)


def _at_steps(cfg: Mapping[str, Any], evaluation: Mapping[str, Any]) -> Iterator[str]:
    steps = evaluation.get("at_steps") or []
    if not steps:
        return
    if not isinstance(steps, (list, tuple)) or not all(isinstance(s, int) and s >= 1 for s in steps):
        yield f"eval.at_steps={steps}: give training steps >= 1, e.g. eval.at_steps=[50,100,150]"
    elif evaluation.get("kind", "tofu") != "tofu" or not evaluation.get("enabled", True):
        yield "eval.at_steps evaluates TOFU along training: it needs eval=tofu (or synthetic) with eval.enabled=true"
    elif (cfg.get("sequence") or {}).get("requests") or cfg.get("base_run"):
        yield "eval.at_steps is for one request: a sequence (sequence=, base_run=) evaluates after each request instead"


def _files(cfg: Mapping[str, Any]) -> Iterator[str]:
    """The retain model's logs: present and a TOFU per-sample log (matched to the forget
    questions once the data is read, still before any model loads: check_evaluation)."""
    from grun_cli.eval.reference import SHORT_PREFIX, read_logs

    logs = (cfg.get("eval") or {}).get("retain_logs")
    if isinstance(logs, str) and logs and not logs.startswith(SHORT_PREFIX):  # published: fetched later
        try:
            read_logs(logs)
        except GrunError as e:
            yield str(e)


CHECKS: dict[str, Callable[[Mapping[str, Any]], Iterator[str]]] = {
    "unlearn": _unlearn, "finetune": _finetune, "eval": _eval}


def check_settings(cfg: Any, command: str) -> None:
    """Raise SettingsError listing every problem of ``cfg`` (a composed config) for ``command``."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    check = CHECKS.get(command)
    if check is None:
        return
    if isinstance(cfg, DictConfig):
        plain: dict[str, Any] = {}
        for key in cfg:
            if key == "hydra":
                continue
            try:
                plain[str(key)] = OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) \
                    else cfg[key]
            except OmegaConfBaseException as e:
                raise SettingsError([f"{key}: {' '.join(str(e).split())}"]) from None
        cfg = plain
    problems = _dedupe(check(cfg))
    if problems:
        raise SettingsError(problems)
