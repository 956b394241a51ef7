"""The paper's qualitative claims as checks over a table (claims.yaml).

A claim compares a metric of one row with another row's (or a number), once per value of
``for_each``. It has three outcomes, decided by one rule over the seeds (each row's value per
seed; a reference row or a number is the same for every seed):

- **holds**: every seed's left value satisfies ``op`` against every seed's right value (the two
  seed ranges do not overlap, and lie the claimed way round);
- **fails**: no seed's left value satisfies it against any seed's right value (the ranges lie
  the other way round);
- **not shown**: anything else: the seed ranges overlap, so the difference is inside the
  seeds' spread.

A claim over several ``for_each`` values holds when it holds for each value, fails when it fails
for any, and is not shown otherwise. With one seed the ranges are points, so the rule gives
holds or fails; a one-seed run (``make repro-ci``) therefore finds a claim recorded ``not shown``
in agreement whichever way its one seed points.

Each claim records its outcome at CPU scale (``cpu_scale: holds | fails | not shown``, or per
``for_each`` value: ``cpu_scale: {gd: holds, npo: not shown}``): the check fails when a claim
recorded ``holds`` no longer holds, and reports a drift when any other record changes. When only
part of a table ran (``grun repro cells=...``, or ``scale=ci`` running a subset of
``scale=cpu``) the ``for_each`` values whose rows ran are checked, each against its own record.
A test (tests/test_claims_records.py) applies the rule to each table's recorded seeds in
expected_ci.json and fails when a record disagrees. Claims are data, never code: nothing in the
file is evaluated.

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

import json
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
HOLDS, FAILS, NOT_SHOWN = "holds", "fails", "not shown"
OUTCOMES = (HOLDS, FAILS, NOT_SHOWN)
RULE = ("holds when every seed's value satisfies the comparison against every seed's value of the other side, "
        "fails when none does, not shown when the seed ranges overlap")


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
    outcome: str | None  # holds | fails | not shown; None: a row or a number was missing
    status: str
    details: list[str]

    @property
    def holds(self) -> bool | None:
        """True / False when shown either way; None when not shown or not checkable."""
        return {HOLDS: True, FAILS: False}.get(self.outcome or "")

    def line(self) -> str:
        state = {HOLDS: "holds", FAILS: "does not hold", NOT_SHOWN: "not shown (inside the seeds' spread)",
                 None: "cannot be checked"}[self.outcome]
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
            if set(map(str, cpu_scale)) != combos or any(v not in OUTCOMES for v in cpu_scale.values()):
                raise GrunError(f"{where}: cpu_scale per value must record holds, fails or not shown for each of "
                                f"{', '.join(sorted(combos))} (got {dict(cpu_scale)})")
            cpu_scale = {str(k): str(v) for k, v in cpu_scale.items()}
        elif cpu_scale not in OUTCOMES:
            raise GrunError(f"{where}: cpu_scale is {cpu_scale!r}; use holds, fails or not shown (or one per "
                            "for_each value)")
        claims.append(Claim(
            id=str(item["id"]), claim=str(item["claim"]), metric=str(item["metric"]), op=str(item["op"]),
            left=_selector(item["left"], f"{where}.left"),
            right=_selector(item["right"], f"{where}.right") if "right" in item else None,
            value=float(item["value"]) if "value" in item else None, scale=float(item.get("scale", 1.0)),
            for_each={str(k): [str(x) for x in v] for k, v in for_each.items()},
            cpu_scale=cpu_scale if isinstance(cpu_scale, dict) else str(cpu_scale), source=str(item.get("source", "")),
            why=str(item.get("why", ""))))
    return claims


#: (labels, metrics): a metric is one number, or a list with one number per seed
Rows = Sequence[tuple[Mapping[str, str], Mapping[str, Any]]]


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
    """holds | fails | not shown: what the table recorded at CPU scale (for one for_each value
    when given; over all of them: holds / fails when each value does, else not shown)."""
    if isinstance(claim.cpu_scale, Mapping):
        if combo is None:
            return _combine(list(claim.cpu_scale.values()))
        return claim.cpu_scale[_combo_name(combo)]
    return claim.cpu_scale


def _combine(outcomes: Sequence[str]) -> str:
    """A claim "for each" value: holds when each value holds, fails when any fails, else not shown."""
    return HOLDS if all(o == HOLDS for o in outcomes) else FAILS if FAILS in outcomes else NOT_SHOWN


def _seeds(value: Any) -> list[float] | None:
    """A metric's per-seed values (a single number: one seed); None when missing or not a number."""
    values = value if isinstance(value, (list, tuple)) else [value]
    numbers = [number(v) for v in values]
    return None if not numbers or None in numbers else numbers  # type: ignore[return-value]


def outcome(left: Sequence[float], right: Sequence[float], op: str) -> str:
    """The three-outcome rule over the seeds (module docstring)."""
    results = [OPS[op](a, b) for a in left for b in right]
    return HOLDS if all(results) else FAILS if not any(results) else NOT_SHOWN


def _status(found: str, record: str, points: bool) -> str:
    """``points``: both sides have one value each (one seed), so the spread is unknown."""
    if found == record or (record == NOT_SHOWN and points):
        return OK
    return FAILED if record == HOLDS else DRIFTED


def _spread(values: Sequence[float]) -> str:
    """One seed's value, or the seeds' range: the rule compares ranges, and a mean would mislead
    for a metric read on a log scale (forget quality's seeds span decades)."""
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"[{min(values):.4g}, {max(values):.4g}]"


def check(claim: Claim, rows: Rows, partial: bool = False) -> ClaimResult:
    """``rows``' metrics are numbers or per-seed lists. ``partial``: only part of the table ran;
    for_each values without rows are left out (``outcome`` is None only when none could be
    checked)."""
    keys = list(claim.for_each)
    combos = [dict(zip(keys, values, strict=True)) for values in product(*claim.for_each.values())] or [{}]
    details: list[str] = []
    outcomes: list[str | None] = []
    statuses = []
    all_points = True
    for combo in combos:
        left_sel = {**claim.left, **combo}
        left = _seeds((_find(rows, left_sel) or {}).get(claim.metric))
        if claim.right is not None:
            right_sel = dict(claim.right) if "role" in claim.right else {**claim.right, **combo}
            right = _seeds((_find(rows, right_sel) or {}).get(claim.metric))
            right_name = _label(right_sel)
        else:
            right, right_name = [claim.value] if claim.value is not None else None, "the bar"
        if left is None or right is None:
            if partial:
                continue
            missing = _label(left_sel) if left is None else right_name
            details.append(f"{missing}: no {claim.metric}")
            outcomes.append(None)
            continue
        bounds = [r * claim.scale for r in right]
        found = outcome(left, bounds, claim.op)
        outcomes.append(found)
        points = len(left) == 1 and len(bounds) == 1
        all_points = all_points and points
        statuses.append(_status(found, recorded(claim, combo) if combo else recorded(claim), points))
        scaled = f"{claim.scale:g} x " if claim.scale != 1.0 else ""
        counts = f"{len(left)}" if len(bounds) in (1, len(left)) else f"{len(left)} / {len(bounds)}"
        seeds = f" over {counts} seeds" if len(left) > 1 else ""
        details.append(f"{_label(left_sel)} {_spread(left)} {claim.op} {scaled}{right_name} {_spread(right)}"
                       f"{seeds}: {found}")
    if None in outcomes or not outcomes:
        return ClaimResult(claim, None, FAILED, details)
    combined = _combine([o for o in outcomes if o is not None])
    if isinstance(claim.cpu_scale, str) and not partial:  # one record for the whole claim
        status = _status(combined, claim.cpu_scale, all_points)
    else:  # each value against its own record
        status = FAILED if FAILED in statuses else DRIFTED if DRIFTED in statuses else OK
    return ClaimResult(claim, combined, status, details)


def expected_rows(numbers: Mapping[str, Mapping[str, Any]], efficiency: bool = False) -> Rows:
    """A table's recorded per-seed values (expected_ci.json's ``numbers``) as claim rows: "npo/grun"
    -> {method, adapter} ({arch, adapter} for the efficiency table), "target" -> {role}."""
    rows = []
    for name, metrics in numbers.items():
        first, _, adapter = name.partition("/")
        labels = ({"arch" if efficiency else "method": first, "adapter": adapter} if adapter else {"role": name})
        rows.append((labels, {k: v.get("seeds") or [v.get("value")] for k, v in metrics.items()
                              if isinstance(v, Mapping)}))
    return rows


RESULTS = "results.json"


def results_rows(path: Path) -> Rows:
    """The rows of a table that `grun repro` does not rerun (the sequential and attack tables:
    their scripts write ``results.json``): ``{"rows": [{"labels": {...}, "metrics": {...}}]}``,
    a metric one number or one per seed. Read as data; nothing in it is evaluated."""
    try:
        raw = json.loads(Path(path).read_text())
        rows = [({str(k): str(v) for k, v in r["labels"].items()}, dict(r["metrics"])) for r in raw["rows"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise GrunError(f"{path} is not a table's results ({type(e).__name__}): it needs rows of labels and "
                        "metrics; write it again with the table's script") from None
    return rows


def check_table(folder: Path, rows: Rows | None = None) -> list[ClaimResult]:
    """Each claim of ``folder/claims.yaml`` (none without the file) over ``rows``, by default
    the table's recorded ``folder/results.json``."""
    rows = results_rows(Path(folder) / RESULTS) if rows is None else rows
    return [check(claim, rows) for claim in load_claims(Path(folder) / "claims.yaml")]


def print_claims(results: Sequence[ClaimResult]) -> None:
    """One line per claim, as `grun repro` prints them, for the table scripts (nothing without claims)."""
    if not results:
        return
    print(f"\nClaims ({RULE}):")
    for r in results:
        print(f"- {r.claim.id}: {r.line()} [recorded: {recorded(r.claim)}; {r.status}]")
