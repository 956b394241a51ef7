"""One table's verdicts once its cells ran: each recorded number compared (ok, drifted,
failed), each claim checked against what the table recorded at CPU scale; and, with
update=true, the measured numbers written as the table's new expected file."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from grun_cli.io_utils import atomic_write_json
from grun_cli.repro.claims import HOLDS, Claim, check
from grun_cli.repro.expected import FAILED, compare, measure
from grun_cli.repro.manifest import Table
from grun_cli.repro.runner import Rows, TableRun, describe_machine, rows_for_expected
from grun_cli.runtime import as_list


def write_expected(table: Table, data: str | None, result: TableRun, expected: dict[str, Any] | None,
                   partial: bool, seeds: list[int], repeats: int) -> dict[str, Any]:
    """Measure the table's numbers and tolerances from its seeds into its expected file; when
    only part of the table ran, these cells join (or replace theirs in) the recorded numbers."""
    numbers = measure(rows_for_expected(result), table.metrics)
    path = table.expected_path(data)
    command = "grun repro " + " ".join(sys.argv[1:])
    if partial and expected is not None:
        numbers = {**expected["numbers"], **numbers}
        command = "; ".join([*as_list(expected.get("command")), command])
    atomic_write_json(path, {
        "about": f"{table.title}: CPU-scale numbers (mean over seeds; log10 metrics: geometric mean) and "
                 "tolerances (1.5 x the largest distance of a seed from the mean, at least the table's "
                 "min_tol) measured by `grun repro`",
        "command": command,
        "data": data, "seeds": seeds if table.kind != "efficiency" else None,
        "repeats": repeats if table.kind == "efficiency" else None,
        "machine": describe_machine(), "date": time.strftime("%Y-%m-%d"), "numbers": numbers})
    print(f"  wrote {path}")
    return {"numbers": numbers}


def table_verdicts(table: Table, result: TableRun, observed: Rows, expected: dict[str, Any] | None,
                   claims: Sequence[Claim], *, scale: str, only: set[str], left_out: set[str], partial: bool,
                   do_check: bool) -> list[dict[str, Any]]:
    """One line each: the cells that failed to run, every recorded number (those of the rows
    that ran) and every claim whose rows ran. At paper scale a claim is expected to hold.
    ``observed``: the result's rows averaged over the seeds (``result.averaged()``)."""
    verdicts = [{"status": FAILED, "table": table.name, "what": "run", "text": failure}
                for failure in result.failures]
    if do_check and expected is not None:
        recorded = {k: v for k, v in expected["numbers"].items() if (not only or k in observed) and k not in left_out}
        verdicts += [{"status": v.status, "table": table.name, "what": f"{v.row} {v.metric}", "text": v.text}
                     for v in compare(observed, recorded, table.metrics)]
    skipped = []
    for model, rows in result.claim_rows().items():
        for claim in claims:
            if scale == "paper":
                claim = type(claim)(**{**vars(claim), "cpu_scale": HOLDS})
            res = check(claim, rows, partial=partial)
            if partial and res.outcome is None:
                skipped.append(claim.id)
                continue
            record = claim.cpu_scale if isinstance(claim.cpu_scale, str) else \
                ", ".join(f"{k}: {v}" for k, v in claim.cpu_scale.items())
            recorded_at = "" if scale == "paper" else f" [recorded at CPU scale: {record}]"
            verdicts.append({"status": res.status, "table": table.name,
                             "what": f"claim {claim.id}" + (f" @{model}" if model else ""),
                             "text": res.line() + recorded_at, "holds": res.holds, "outcome": res.outcome,
                             "claim": claim.claim})
    if skipped:
        print(f"  {table.name}: claims not checked (their rows were not run with cells=): {', '.join(skipped)}")
    return verdicts
