"""The sequential table (markdown) from sequence runs' sequence.jsonl: after each request, forget
quality and forget Prob on the authors forgotten so far, forget Prob on request 1's authors,
model utility, and GRUN's gate on the forget / retain rows; then the claims of claims.yaml over
these runs (the three-outcome rule of src/grun_cli/repro/claims.py).

usage: python experiments/sequential/table.py [--target <eval run>] [--json results.json] <run folder>...
(--target: the `grun eval` run of the target before any request, the row {role: target} the
utility claim compares with; --json: write the rows the claims are checked on;
tests/test_claims_records.py checks claims.yaml's records against that file)"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

from grun_cli.repro.claims import check_table, print_claims
from grun_cli.repro.runner import describe_machine


def fmt(v: object) -> str:
    if v is None:
        return "n/a"
    v = float(v)  # type: ignore[arg-type]
    return f"{v:.2e}" if 0 < abs(v) < 1e-3 else f"{v:.3f}"


def rows(folders: list[Path]) -> list[dict]:
    """One row per (run, request): labels run (the folder's name) and request, its metrics."""
    out = []
    for folder in folders:
        for text in (folder / "sequence.jsonl").read_text().splitlines():
            line = json.loads(text)
            out.append({"labels": {"run": folder.name, "request": str(line["request"]["request"])},
                        "metrics": {k: v for k, v in line["metrics"].items() if isinstance(v, (int, float))}})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the rows here (experiments/sequential/results.json)")
    parser.add_argument("--target", type=Path, help="grun eval run folder of the target (metrics.json)")
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args()
    table = rows(args.folders)
    target = []
    if args.target:
        m = json.loads((args.target / "metrics.json").read_text())
        target = [{"labels": {"role": "target"},
                   "metrics": {k: v for k, v in m.items() if isinstance(v, (int, float)) and "time" not in k}}]
    print("| run | request | FQ (all so far) | Prob (all so far) | FQ (this request) | Prob (request 1) "
          "| model utility | gate forget / retain |")
    print("|---|---|---|---|---|---|---|---|")
    for row in table:
        m, k = row["metrics"], row["labels"]["request"]
        gate = (f"{fmt(m['gate_forget_mean'])} / {fmt(m['gate_retain_mean'])}" if "gate_forget_mean" in m
                else "")
        print(f"| {row['labels']['run']} | {k} | {fmt(m.get('forgotten_forget_quality'))} "
              f"| {fmt(m.get('forgotten_forget_Q_A_Prob'))} | {fmt(m.get(f'request_{k}_forget_quality'))} "
              f"| {fmt(m.get('request_1_forget_Q_A_Prob'))} | {fmt(m.get('model_utility'))} | {gate} |")
    if args.json:
        cards = [json.loads((f / "run_card.json").read_text()) for f in args.folders if (f / "run_card.json").is_file()]
        args.json.write_text(json.dumps({
            "what": "experiments/sequential/table.py over these run folders (one seed each, one torch thread per run)",
            "runs": [str(f) for f in args.folders], "machine": {k: v for k, v in describe_machine().items() if k != "torch_threads"}, "date": date.today().isoformat(),
            "seeds": sorted({c.get("config", {}).get("seed") for c in cards} - {None}),
            "target": str(args.target) if args.target else None, "rows": target + table}, indent=1) + "\n")
    print_claims(check_table(Path(__file__).parent, [(r["labels"], r["metrics"]) for r in target + table]))


if __name__ == "__main__":
    main()
