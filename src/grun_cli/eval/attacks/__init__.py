"""Attacks on an unlearned model, as evaluation options (``eval.attacks=[...]``): each tries to
bring the forgotten knowledge back, and the evaluation reports the forget metrics under it next
to the unattacked ones. One module per attack, registered here by name (like ``methods/``).

Two kinds. A *prompt* attack changes what the forget questions look like (paraphrased, in
another format) and is scored in the same passes as the plain evaluation. A *model* attack
changes the model (quantized weights, a few relearning steps, the edit taken away) for one
more evaluation, and puts it back exactly afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from grun_cli.errors import GrunError
from grun_cli.registry import Registry

#: The evaluations (``eval.kind``) an attack can run in.
EVALUATIONS = ("tofu", "lm_eval")


@dataclass
class AttackTarget:
    """What a model attack works on: the evaluated model with its adapter (None for a plain
    model), and what it needs to build training rows (relearn)."""

    model: Any
    adapter: Any
    tokenizer: Any
    template: Any
    source: Any
    max_length: int
    seed: int = 0


class Attack:
    """One attack; ``settings`` is its section of ``eval.attack_settings``."""

    name: ClassVar[str]
    settings_key: ClassVar[str | None] = None  # its section of eval.attack_settings
    evaluations: ClassVar[tuple[str, ...]] = EVALUATIONS
    adapters: ClassVar[tuple[str, ...] | None] = None  # adapter kinds it needs; None: any model
    changes_model: ClassVar[bool] = False

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        self.settings = dict(settings or {})

    def problems(self, evaluation: str, adapter: str | None) -> Iterator[str]:
        """What makes this attack impossible for this evaluation and adapter, one line each."""
        if evaluation not in self.evaluations:
            yield (f"eval.attacks: {self.name} is an attack for eval.kind "
                   f"{' or '.join(self.evaluations)}, not {evaluation}; drop it from eval.attacks")
        if self.adapters is not None and adapter not in self.adapters:
            what = f"adapter={adapter}" if adapter else "a plain model (no adapter)"
            yield (f"eval.attacks: {self.name} needs a run trained with adapter={' or '.join(self.adapters)}, "
                   f"not {what}; drop it from eval.attacks")


class PromptAttack(Attack):
    """Asks the forget questions differently; the model is unchanged."""

    def prepare(self, sets: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:  # noqa: B027 - optional
        """Called once with the evaluation sets before ``question`` (e.g. to draw few-shot rows)."""

    def question(self, row: Mapping[str, Any]) -> str:
        raise NotImplementedError


class ModelAttack(Attack):
    """Changes the model for one evaluation and restores it afterwards; ``info`` holds what the
    attack itself measured (reported as ``<attack>_<key>``)."""

    changes_model = True

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
        self.info: dict[str, Any] = {}

    def applied(self, target: AttackTarget) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError


ATTACKS: Registry[Attack] = Registry("attack", __name__)  # one module per attack
register = ATTACKS.register


def available() -> list[str]:
    return ATTACKS.names()


def make_attacks(names: Sequence[str] | None, settings: Mapping[str, Any] | None = None) -> list[Attack]:
    """The attacks ``eval.attacks`` names, in its order, each with its settings section."""
    names = [str(n) for n in names or []]
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        raise GrunError(f"eval.attacks={unknown}: known attacks are {', '.join(available())}")
    if len(set(names)) != len(names):
        raise GrunError(f"eval.attacks={names} names an attack twice; list each once")
    settings = dict(settings or {})
    classes = [ATTACKS.get(n) for n in names]
    return [cls(settings.get(cls.settings_key or n)) for cls, n in zip(classes, names, strict=True)]


def problems(names: Sequence[str] | None, settings: Mapping[str, Any] | None, evaluation: str,
             adapter: str | None) -> list[str]:
    """Every problem of ``eval.attacks`` for this evaluation and adapter (before anything loads)."""
    try:
        attacks = make_attacks(names, settings)
    except GrunError as e:
        return [str(e)]
    return [p for attack in attacks for p in attack.problems(evaluation, adapter)]


#: the columns of the attack table, per evaluation
TABLE_COLUMNS = {"tofu": ("forget_quality", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_truth_ratio",
                          "model_utility", "gate_forget_mean"),
                 "lm_eval": ("forget_text_nll", "retain_text_nll", "wmdp_bio_acc", "wmdp_cyber_acc", "mmlu_acc",
                             "gate_forget_mean")}


def attack_keys(metrics: Mapping[str, Any]) -> set[str]:
    """The keys of ``metrics`` an attack reported (``<attack>_<metric>``)."""
    names = available()
    return {k for k in metrics if any(k.startswith(f"{n}_") for n in names)}


def attack_table(metrics: Mapping[str, Any]) -> str | None:
    """The unattacked values and each attack's (``<attack>_<metric>``) side by side; None
    when no attack ran."""
    names = [n for n in available() if any(k.startswith(f"{n}_") for k in metrics)]
    if not names:
        return None
    kind = "tofu" if "model_utility" in metrics else "lm_eval"
    columns = [c for c in TABLE_COLUMNS[kind] if c in metrics or any(f"{n}_{c}" in metrics for n in names)]
    rows = [("attack", *columns), ("none", *[metrics.get(c) for c in columns])]
    rows += [(n, *[metrics.get(f"{n}_{c}") for c in columns]) for n in names]

    def show(v: Any) -> str:
        return v if isinstance(v, str) else "-" if v is None else f"{v:.4g}"

    cells = [[show(v) for v in row] for row in rows]
    widths = [max(len(r[j]) for r in cells) for j in range(len(cells[0]))]
    return "\n".join("  " + "  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in
                                        enumerate(zip(r, widths, strict=True))) for r in cells)


__all__ = ["attack_keys", "attack_table", "Attack", "AttackTarget", "ModelAttack", "PromptAttack", "available", "make_attacks", "problems",
           "register"]
