"""The sequential table (markdown) from sequence runs' sequence.jsonl: after each request, forget
quality and forget Prob on the authors forgotten so far, forget Prob on request 1's authors,
model utility, and GRUN's gate on the forget / retain rows.
usage: python experiments/sequential/table.py <run folder>..."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def fmt(v: object) -> str:
    if v is None:
        return "n/a"
    v = float(v)  # type: ignore[arg-type]
    return f"{v:.2e}" if 0 < abs(v) < 1e-3 else f"{v:.3f}"


def main(folders: list[str]) -> None:
    print("| run | request | FQ (all so far) | Prob (all so far) | FQ (this request) | Prob (request 1) "
          "| model utility | gate forget / retain |")
    print("|---|---|---|---|---|---|---|---|")
    for folder in folders:
        for text in (Path(folder) / "sequence.jsonl").read_text().splitlines():
            line = json.loads(text)
            m, k = line["metrics"], line["request"]["request"]
            gate = (f"{fmt(m['gate_forget_mean'])} / {fmt(m['gate_retain_mean'])}" if "gate_forget_mean" in m
                    else "")
            print(f"| {Path(folder).name} | {k} | {fmt(m.get('forgotten_forget_quality'))} "
                  f"| {fmt(m.get('forgotten_forget_Q_A_Prob'))} | {fmt(m.get(f'request_{k}_forget_quality'))} "
                  f"| {fmt(m.get('request_1_forget_Q_A_Prob'))} | {fmt(m.get('model_utility'))} | {gate} |")


if __name__ == "__main__":
    main(sys.argv[1:])
