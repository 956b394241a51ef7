"""The attack table of README.md from `grun eval` run folders (experiments/attacks/run.sh):
one line per (cell, attack), the unattacked line first; then the claims of claims.yaml over
these rows (the three-outcome rule of src/grun_cli/repro/claims.py).

usage: python experiments/attacks/table.py [--json results.json] <out folder of run.sh>
(--json: write the rows the claims are checked on; tests/test_claims_records.py checks
claims.yaml's records against that file)
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

from grun_cli.eval.attacks import available
from grun_cli.repro.claims import check_table, print_claims
from grun_cli.repro.runner import describe_machine

COLUMNS = ("forget_quality", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_truth_ratio", "model_utility",
           "gate_forget_mean")


def show(value: object) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return f"{value:.2e}" if abs(value) < 1e-3 and value != 0 else f"{value:.3f}"


def rows(out: Path) -> list[dict]:
    """One row per (cell, attack): labels cell (the run folder's name) and attack (none first)."""
    table = []
    for metrics_file in sorted(out.glob("*/metrics.json")):
        m = json.loads(metrics_file.read_text())
        cell = metrics_file.parent.name
        table.append({"labels": {"cell": cell, "attack": "none"},
                      "metrics": {c: m[c] for c in COLUMNS if isinstance(m.get(c), (int, float))}})
        for attack in available():
            if any(k.startswith(f"{attack}_") for k in m):
                table.append({"labels": {"cell": cell, "attack": attack},
                              "metrics": {c: m[f"{attack}_{c}"] for c in COLUMNS
                                          if isinstance(m.get(f"{attack}_{c}"), (int, float))}})
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the rows here (experiments/attacks/results.json)")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    table = rows(args.out)
    print("| cell | attack | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for row in table:
        print(f"| {row['labels']['cell']} | {row['labels']['attack']} | "
              + " | ".join(show(row["metrics"].get(c)) for c in COLUMNS) + " |")
    if args.json:
        args.json.write_text(json.dumps({
            "what": "experiments/attacks/table.py over the run folders of experiments/attacks/run.sh (seed 42)",
            "runs": str(args.out), "machine": {k: v for k, v in describe_machine().items() if k != "torch_threads"}, "date": date.today().isoformat(), "seeds": [42],
            "rows": table}, indent=1) + "\n")
    print_claims(check_table(Path(__file__).parent, [(r["labels"], r["metrics"]) for r in table]))


if __name__ == "__main__":
    main()
