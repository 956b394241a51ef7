"""Every table's recorded claim outcomes (claims.yaml, cpu_scale) follow the one three-outcome
rule applied to the seeds recorded in its expected_ci.json (the tables `grun repro` reruns) or its
results.json (the sequential and attack tables, written by their table.py): a record can't be
relabelled by hand one way for GRUN and another way against it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grun_cli.repro.claims import RESULTS, check_table, expected_rows
from grun_cli.repro.expected import OK

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
TABLES = sorted(p.parent.name for p in EXPERIMENTS.glob("*/claims.yaml")
                if (p.parent / "expected_ci.json").is_file() or (p.parent / RESULTS).is_file())


def test_tables_with_claims_are_found() -> None:
    assert {"tofu_forget05", "wmdp", "efficiency", "attacks", "sequential"} <= set(TABLES)


@pytest.mark.parametrize("table", TABLES)
def test_recorded_outcomes_follow_the_rule(table: str) -> None:
    folder = EXPERIMENTS / table
    if (folder / "expected_ci.json").is_file():
        numbers = json.loads((folder / "expected_ci.json").read_text())["numbers"]
        rows = expected_rows(numbers, efficiency=table == "efficiency")
    else:
        rows = None  # the recorded results.json
    wrong = [f"{result.claim.id}: recorded {result.claim.cpu_scale}, the rule gives {result.line()}"
             for result in check_table(folder, rows) if result.outcome is None or result.status != OK]
    assert not wrong, "\n".join(wrong)
