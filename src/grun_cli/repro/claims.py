"""The paper's qualitative claims as checks over a table (claims.yaml).

A claim compares a metric of one row with another row's (or a number), once per value of
``for_each``; it holds when every comparison does. Each claim records whether it held at CPU
scale when the table was made (``cpu_scale: holds | fails``, or per ``for_each`` value:
``cpu_scale: {gd: holds, npo: fails}``): the check fails when a claim that held stops holding,
and reports a drift when one that failed starts to hold. When only part of a table ran
(``grun repro cells=...``, or ``scale=ci`` running a subset of ``scale=cpu``) the ``for_each``
values whose rows ran are checked, each against its own record. Claims are data, never code:
nothing in the file is evaluated.

    - id: grun_keeps_utility
      claim: GRUN's model utility is at least full fine-tuning's, for each method
      source: Ren et al. 2025, Table 1
      metric: model_utility
      for_each: {method: [gd, npo, idk]}
      left: {adapter: grun}
      op: ">="
      right: {adapter: full}   # or value: 0.95; scale: 0.3 multiplies the right side
      cpu_scale: holds

for_each's labels are added to both sides, except to a side that names a reference row
({role: target}), which is the same row for every method.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import yaml

from grun_cli.errors import GrunError
from grun_cli.repro.expected import DRIFTED, FAILED, OK, number

OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
HOLDS, FAILS = "holds", "fails"


@dataclass(frozen=True)
class Claim:
    id: str
    claim: str
    metric: str
    op: str
    left: Mapping[str, str]
    right: Mapping[str, str] | None = None
    value: float | None = None
    scale: float = 1.0
    for_each: Mapping[str, Sequence[str]] = field(default_factory=dict)
    cpu_scale: str | Mapping[str, str] = HOLDS  # one record, or one per for_each value ("gd", "npo/x")
    source: str = ""
    why: str = ""


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    holds: bool | None  # None: a row or a number was missing
    status: str
    details: list[str]

    def line(self) -> str:
        state = {True: "holds", False: "does not hold", None: "cannot be checked"}[self.holds]
        return f"{state} ({'; '.join(self.details)})"


def _selector(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not value:
        raise GrunError(f"{where} must name a row, e.g. {{adapter: grun}}")
    return {str(k): str(v) for k, v in value.items()}


def load_claims(path: Path) -> list[Claim]:
    if not path.is_file():
        return []
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise GrunError(f"{path} is not valid YAML; fix the file") from e
    items = raw.get("claims") if isinstance(raw, Mapping) else None
    if not isinstance(items, list):
        raise GrunError(f"{path} needs a list under claims:")
    claims, seen = [], set()
    for i, item in enumerate(items):
        where = f"{path}: claims[{i}]"
        if not isinstance(item, Mapping):
            raise GrunError(f"{where} must be a mapping")
        missing = [k for k in ("id", "claim", "metric", "op", "left") if k not in item]
        if missing:
            raise GrunError(f"{where} has no {', '.join(missing)}")
        if item["id"] in seen:
            raise GrunError(f"{where}: id {item['id']} is used twice")
        seen.add(item["id"])
        if item["op"] not in OPS:
            raise GrunError(f"{where}: op {item['op']!r}; use one of {' '.join(OPS)}")
        if ("right" in item) == ("value" in item):
            raise GrunError(f"{where}: give right: {{...}} (another row) or value: <number>, one of them")
        for_each = item.get("for_each") or {}
        if not isinstance(for_each, Mapping) or any(not isinstance(v, list) or not v for v in for_each.values()):
            raise GrunError(f"{where}: for_each must map a label to a non-empty list, e.g. {{method: [gd, npo]}}")
        cpu_scale = item.get("cpu_scale", HOLDS)
        if isinstance(cpu_scale, Mapping):
            combos = {_combo_name(dict(zip(for_each, v, strict=True)))
                      for v in product(*[[str(x) for x in vs] for vs in for_each.values()])}
            if set(map(str, cpu_scale)) != combos or any(v not in (HOLDS, FAILS) for v in cpu_scale.values()):
                raise GrunError(f"{where}: cpu_scale per value must record holds or fails for each of "
                                f"{', '.join(sorted(combos))} (got {dict(cpu_scale)})")
            cpu_scale = {str(k): str(v) for k, v in cpu_scale.items()}
        elif cpu_scale not in (HOLDS, FAILS):
            raise GrunError(f"{where}: cpu_scale is {cpu_scale!r}; use holds or fails (or one per for_each value)")
        claims.append(Claim(
            id=str(item["id"]), claim=str(item["claim"]), metric=str(item["metric"]), op=str(item["op"]),
            left=_selector(item["left"], f"{where}.left"),
            right=_selector(item["right"], f"{where}.right") if "right" in item else None,
            value=float(item["value"]) if "value" in item else None, scale=float(item.get("scale", 1.0)),
            for_each={str(k): [str(x) for x in v] for k, v in for_each.items()},
            cpu_scale=cpu_scale if isinstance(cpu_scale, dict) else str(cpu_scale), source=str(item.get("source", "")),
            why=str(item.get("why", ""))))
    return claims


Rows = Sequence[tuple[Mapping[str, str], Mapping[str, Any]]]  # (labels, metrics)


def _find(rows: Rows, selector: Mapping[str, str]) -> Mapping[str, Any] | None:
    hits = [m for labels, m in rows if all(str(labels.get(k)) == v for k, v in selector.items())]
    return hits[0] if len(hits) == 1 else None


_LABEL_ORDER = ("arch", "method", "adapter", "role")


def _label(selector: Mapping[str, str]) -> str:
    """"npo/grun" whatever order the claim named the labels in."""
    keys = sorted(selector, key=lambda k: _LABEL_ORDER.index(k) if k in _LABEL_ORDER else len(_LABEL_ORDER))
    return "/".join(selector[k] for k in keys)


def _combo_name(combo: Mapping[str, str]) -> str:
    return "/".join(combo.values())


def recorded(claim: Claim, combo: Mapping[str, str] | None = None) -> str:
    """holds | fails: what the table recorded at CPU scale (for one for_each value when given)."""
    if isinstance(claim.cpu_scale, Mapping):
        if combo is None:
            return HOLDS if all(v == HOLDS for v in claim.cpu_scale.values()) else FAILS
        return claim.cpu_scale[_combo_name(combo)]
    return claim.cpu_scale


def _status(holds: bool, record: str) -> str:
    if holds == (record == HOLDS):
        return OK
    return FAILED if record == HOLDS else DRIFTED


def check(claim: Claim, rows: Rows, partial: bool = False) -> ClaimResult:
    """``partial``: only part of the table ran; for_each values without rows are left out
    (``holds`` is None only when none could be checked)."""
    keys = list(claim.for_each)
    combos = [dict(zip(keys, values, strict=True)) for values in product(*claim.for_each.values())] or [{}]
    details, outcomes, statuses = [], [], []
    for combo in combos:
        left_sel = {**claim.left, **combo}
        left = number((_find(rows, left_sel) or {}).get(claim.metric))
        if claim.right is not None:
            right_sel = dict(claim.right) if "role" in claim.right else {**claim.right, **combo}
            right = number((_find(rows, right_sel) or {}).get(claim.metric))
            right_name = _label(right_sel)
        else:
            right, right_name = claim.value, "the bar"
        if left is None or right is None:
            if partial:
                continue
            missing = _label(left_sel) if left is None else right_name
            details.append(f"{missing}: no {claim.metric}")
            outcomes.append(None)
            continue
        bound = right * claim.scale
        ok = OPS[claim.op](left, bound)
        outcomes.append(ok)
        statuses.append(_status(ok, recorded(claim, combo) if combo else recorded(claim)))
        scaled = f"{claim.scale:g} x " if claim.scale != 1.0 else ""
        details.append(f"{_label(left_sel)} {left:.4g} {claim.op} {scaled}{right_name} {right:.4g}: "
                       f"{'yes' if ok else 'no'}")
    holds = None if None in outcomes or not outcomes else all(outcomes)
    if holds is None:
        status = FAILED
    elif isinstance(claim.cpu_scale, Mapping) or partial:  # each value against its own record
        status = FAILED if FAILED in statuses else DRIFTED if DRIFTED in statuses else OK
    else:
        status = _status(holds, claim.cpu_scale)
    return ClaimResult(claim, holds, status, details)
