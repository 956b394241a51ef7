"""Numbers against expected_ci.json: ok (within tolerance), drifted (outside it, in the better
direction: update the expected file, or a wall-clock ratio outside it either way), failed (outside
it, worse, or missing).

The tolerances are measured, not guessed: ``measure`` runs the same cells over several seeds
and keeps 1.5x the largest distance of a seed from the mean, floored by the table's min_tol
(seeds that agree to every digit still differ across thread counts and library versions).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from grun_cli.repro.manifest import MetricSpec

SPREAD_FACTOR = 1.5
OK, DRIFTED, FAILED = "ok", "drifted", "failed"


@dataclass(frozen=True)
class Verdict:
    status: str  # ok | drifted | failed
    row: str
    metric: str
    text: str


def number(value: Any, log10: bool = False) -> float | None:
    """A metric as a float (log10 of it when ``log10``), or None when it is not a number."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        return None
    if log10:
        return math.log10(value) if value > 0 else -400.0  # an underflowed p-value: below any float
    return float(value)


def _show(value: float, log10: bool) -> str:
    return f"{10 ** value:.2e}" if log10 else f"{value:.4g}"


def compare(observed: Mapping[str, Mapping[str, Any]], expected: Mapping[str, Any],
            specs: Mapping[str, MetricSpec]) -> list[Verdict]:
    """One verdict per expected (row, metric); ``observed`` is ``{row: metrics}``."""
    verdicts = []
    for row, numbers in expected.items():
        for metric, exp in numbers.items():
            spec = specs.get(metric, MetricSpec(metric, bool(exp.get("log10", False)), exp.get("better")))
            log10 = bool(exp.get("log10", spec.log10))
            better = exp.get("better", spec.better)
            want, tol = number(exp["value"], log10), float(exp["tol"])
            if want is None:
                verdicts.append(Verdict(FAILED, row, metric, f"the expected value {exp['value']!r} is not a number"))
                continue
            unit = " decades" if log10 else ""
            got = number((observed.get(row) or {}).get(metric), log10)
            if got is None:
                verdicts.append(Verdict(FAILED, row, metric, f"not measured (expected {_show(want, log10)})"))
                continue
            diff = got - want
            text = f"{_show(got, log10)} (expected {_show(want, log10)} ± {tol:.3g}{unit})"
            if abs(diff) <= tol:
                status = OK
            elif (better == "higher" and diff > 0) or (better == "lower" and diff < 0):
                status = DRIFTED
                text += ": better than recorded; update the expected file (update=true)"
            elif spec.wall_clock:
                status = DRIFTED
                text += ": slower than recorded; a wall-clock ratio moves with the machine's load, so it is reported, not failed (claims.yaml bounds it)"
            else:
                status = FAILED
            verdicts.append(Verdict(status, row, metric, text))
    return verdicts


def measure(per_seed: Sequence[Mapping[str, Mapping[str, Any]]], specs: Mapping[str, MetricSpec]) -> dict[str, Any]:
    """``{row: {metric: {value, tol, log10, better, seeds}}}`` from the rows of several seeds."""
    rows = sorted({r for seed in per_seed for r in seed})
    out: dict[str, Any] = {}
    for row in rows:
        numbers = {}
        for name, spec in specs.items():
            values = [number((seed.get(row) or {}).get(name), spec.log10) for seed in per_seed]
            if any(v is None for v in values) or not values:
                continue
            mean = statistics.fmean(values)
            spread = max(abs(v - mean) for v in values)
            numbers[name] = {"value": 10 ** mean if spec.log10 else mean,  # log10: the geometric mean
                             "tol": round(max(SPREAD_FACTOR * spread, spec.min_tol), 6),
                             "log10": spec.log10, "better": spec.better,
                             "seeds": [10 ** v if spec.log10 else v for v in values]}
        if numbers:
            out[row] = numbers
    return out
