"""The attack table of README.md from `grun eval` run folders (experiments/attacks/run.sh):
one line per (cell, attack), the unattacked line first.

usage: python experiments/attacks/table.py <out folder of run.sh>
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grun_cli.eval.attacks import available

COLUMNS = ("forget_quality", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_truth_ratio", "model_utility",
           "gate_forget_mean")


def show(value: object) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return f"{value:.2e}" if abs(value) < 1e-3 and value != 0 else f"{value:.3f}"


def main(out: Path) -> None:
    print("| cell | attack | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for metrics_file in sorted(out.glob("*/metrics.json")):
        m = json.loads(metrics_file.read_text())
        cell = metrics_file.parent.name
        print(f"| {cell} | none | " + " | ".join(show(m.get(c)) for c in COLUMNS) + " |")
        for attack in available():
            if any(k.startswith(f"{attack}_") for k in m):
                print(f"| {cell} | {attack} | " + " | ".join(show(m.get(f"{attack}_{c}")) for c in COLUMNS) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
