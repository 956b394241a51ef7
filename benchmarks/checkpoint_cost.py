"""What periodic checkpoints (train.save_steps, for resume=) cost, per adapter, side by side.

Runs the real `grun unlearn` on the tiny model for each adapter twice in one go, with no periodic
checkpoint (save_steps=0: only the final one) and with one every --every steps, in rotating order
over --rounds rounds, and reports the training time (HF's train_runtime, from train_log.jsonl) of
each as a ratio, plus the overhead per step and per checkpoint.

    GRUN_DATA_DIR=../shared/data python benchmarks/checkpoint_cost.py               # TOFU forget05
    python benchmarks/checkpoint_cost.py --steps 200 --every 10 --rounds 3 --data synthetic
    python benchmarks/checkpoint_cost.py --json out.json

A checkpoint holds the trained tensors (fp32), AdamW's two moments and the RNG / scheduler state:
about 12 bytes per trainable parameter, which the table also gives at Llama-3.1-8B's shape.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ADAPTERS = ("grun", "lora", "full")
#: trainable parameters at Llama-3.1-8B's shape (benchmarks/step_cost.py --count-only)
AT_8B = {"grun": 3 * (2 * 4096 * 4 + 4 + 4097), "lora": 10_485_760, "full": 8_030_261_248}


def run(adapter: str, every: int, args: argparse.Namespace, folder: Path) -> float:
    out = folder / f"{adapter}-{every}"
    data = ["data=tofu"] if args.data == "tofu" else ["data.num_authors=30", "data.subset.retain_authors=3"]
    cmd = [str(Path(sys.executable).with_name("grun")), "unlearn", *data, "method=npo", f"adapter={adapter}",
           "eval.enabled=false", "probe.max_rows=0", "logger=none", f"train.max_steps={args.steps}",
           f"train.save_steps={every}", f"hydra.run.dir={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "WANDB_MODE": "disabled"}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    last = json.loads((out / "train_log.jsonl").read_text().splitlines()[-1])
    return float(last["train_runtime"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", choices=("tofu", "synthetic"), default="tofu" if os.environ.get("GRUN_DATA_DIR")
                   else "synthetic")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    times: dict[tuple[str, int], list[float]] = {}
    jobs = [(a, e) for a in ADAPTERS for e in (0, args.every)]
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for adapter, every in jobs[r % len(jobs):] + jobs[: r % len(jobs)]:  # rotate the order each round
                times.setdefault((adapter, every), []).append(run(adapter, every, args, Path(tmp) / str(r)))
    rows = {}
    checkpoints = args.steps // args.every
    print(f"{args.steps} steps, a checkpoint every {args.every} ({checkpoints}), {args.data} data, "
          f"{args.threads} thread(s), median of {args.rounds} rounds")
    print(f"{'adapter':<8}{'no ckpt s':>11}{'ckpt s':>9}{'ratio':>8}{'ms/step':>9}{'ms/ckpt':>9}{'GB/ckpt at 8B':>15}")
    for adapter in ADAPTERS:
        base, with_ = (statistics.median(times[(adapter, e)]) for e in (0, args.every))
        rows[adapter] = {"train_s": base, "train_s_with_checkpoints": with_, "ratio": with_ / base,
                         "overhead_ms_per_step": 1000 * (with_ - base) / args.steps,
                         "overhead_ms_per_checkpoint": 1000 * (with_ - base) / max(1, checkpoints),
                         "checkpoint_gb_at_8b": 12 * AT_8B[adapter] / 1e9}
        r = rows[adapter]
        print(f"{adapter:<8}{base:>11.2f}{with_:>9.2f}{r['ratio']:>8.3f}{r['overhead_ms_per_step']:>9.2f}"
              f"{r['overhead_ms_per_checkpoint']:>9.1f}{r['checkpoint_gb_at_8b']:>15.3f}")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
