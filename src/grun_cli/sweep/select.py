"""The selection rule and the Pareto front over trial records.

The field's protocol (OpenUnlearning, the GRUN and NPO papers): among the trials whose model
utility is at least ``min_utility`` x the target model's, the one with the best forget
quality. Both GRUN and every baseline are picked by this same rule, so a table compares
methods at the same tuning budget and the same selection. Pure functions: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DIRECTIONS = ("maximize", "minimize")


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def better(a: float, b: float, direction: str) -> bool:
    """True when ``a`` is strictly better than ``b`` in ``direction``."""
    return a > b if direction == "maximize" else a < b


def meets_bar(value: float, bar: float, direction: str) -> bool:
    """Whether a utility ``value`` reaches the selection rule's ``bar`` (the bar itself counts)."""
    return value == bar or not better(bar, value, direction)


def pareto_front(points: Sequence[tuple[float, float]],
                 directions: tuple[str, str] = ("maximize", "maximize")) -> list[int]:
    """Indices of the non-dominated points (in input order). A point with a non-finite
    coordinate is never on the front; equal points are all kept."""
    ok = [i for i, p in enumerate(points) if all(finite(v) for v in p)]

    def dominates(p: tuple[float, float], q: tuple[float, float]) -> bool:
        no_worse = all(not better(qv, pv, d) for pv, qv, d in zip(p, q, directions, strict=True))
        strictly = any(better(pv, qv, d) for pv, qv, d in zip(p, q, directions, strict=True))
        return no_worse and strictly

    return [i for i in ok if not any(dominates(points[j], points[i]) for j in ok if j != i)]


@dataclass(frozen=True)
class Objective:
    """One number read from a trial's metrics: which key, which way is better, and whether
    the optimiser sees it on a log10 scale (forget quality spans hundreds of decades)."""

    metric: str
    direction: str = "maximize"
    log: bool = False

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Objective:
        direction = str(cfg.get("direction", "maximize"))
        if direction not in DIRECTIONS:
            from grun_cli.errors import GrunError

            raise GrunError(f"objective direction={direction} is not one of {', '.join(DIRECTIONS)}")
        return cls(str(cfg["metric"]), direction, bool(cfg.get("log", False)))

    #: log10 of the smallest positive double: a p-value that underflowed to 0 sorts last, finitely.
    FLOOR = -324.0

    def value(self, metrics: Mapping[str, Any]) -> float:
        """The objective value of a trial's metrics; NaN when absent or not a number."""
        x = metrics.get(self.metric)
        if not finite(x):
            return math.nan
        if self.log:
            return math.log10(x) if x > 0 else self.FLOOR
        return float(x)


def objectives(spec: Mapping[str, Mapping[str, Any]]) -> dict[str, Objective]:
    """``sweep.objective`` (``{name: {metric, direction, log}}``) as Objectives."""
    return {str(name): Objective.from_config(cfg) for name, cfg in spec.items()}


def utility_bar(target_utility: float | None, min_utility: float, direction: str) -> float | None:
    """The utility a trial must reach: ``min_utility`` x the target's for a maximised utility
    (model utility, MMLU), the target's / ``min_utility`` for a minimised one (retain NLL)."""
    if not finite(target_utility) or min_utility <= 0:
        return None
    return min_utility * target_utility if direction == "maximize" else target_utility / min_utility


def select_best(trials: Sequence[Mapping[str, Any]], forget: Objective, utility: Objective,
                bar: float | None) -> tuple[Mapping[str, Any] | None, str]:
    """The selected trial and why. Candidates are complete trials with finite objectives
    whose utility meets ``bar`` (every one when there is no bar). Best forget objective
    wins; ties go to the better utility, then to the lower trial number (the earlier one)."""
    done = [t for t in trials if t.get("status") == "complete"]
    scored = [(t, forget.value(t.get("metrics") or {}), utility.value(t.get("metrics") or {})) for t in done]
    scored = [(t, f, u) for t, f, u in scored if finite(f) and finite(u)]
    if not scored:
        return None, f"no complete trial with finite {forget.metric} and {utility.metric}"
    if bar is not None:
        scored = [(t, f, u) for t, f, u in scored if meets_bar(u, bar, utility.direction)]
        if not scored:
            op = ">=" if utility.direction == "maximize" else "<="
            return None, f"no trial reached {utility.metric} {op} {bar:.4g}"
    sign_f = 1 if forget.direction == "maximize" else -1
    sign_u = 1 if utility.direction == "maximize" else -1
    best = min(scored, key=lambda s: (-sign_f * s[1], -sign_u * s[2], int(s[0].get("number", 0))))
    return best[0], "selected"


def rule_text(forget: Objective, utility: Objective, min_utility: float, target_utility: float | None,
              bar: float | None) -> str:
    """The rule in words, as best.json and the report state it."""
    best = "highest" if forget.direction == "maximize" else "lowest"
    if bar is None:
        return (f"{best} {forget.metric} among complete trials (no utility bar: the target model's "
                f"{utility.metric} is unknown); ties: better {utility.metric}, then earlier trial")
    op, rel = (">=", f"{min_utility:g} x") if utility.direction == "maximize" else ("<=", f"1/{min_utility:g} x")
    return (f"{best} {forget.metric} among complete trials with {utility.metric} {op} {rel} the target "
            f"model's ({target_utility:.4g}) = {bar:.4g}; ties: better {utility.metric}, then earlier trial")
