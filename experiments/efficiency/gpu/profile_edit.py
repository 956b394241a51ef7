"""Where GRUN's generation overhead goes on a GPU: the prompt's forward (prefill) with the edit
on vs off, timed alone with CUDA events, then one greedy generation of each under
torch.profiler (top operators by CPU and CUDA time). A diagnostic for edit_overhead.py's
generation row; random Llama-3.1-8B-shaped weights.

    python experiments/efficiency/gpu/profile_edit.py --device cuda --dtype bfloat16 --out DIR
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
from step_cost import ARCHS  # noqa: E402


def main() -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from grun_cli.adapters import make_adapter

    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="llama3.1-8b", choices=sorted(ARCHS))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--out", default=".")
    args = ap.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    config = LlamaConfig(**ARCHS[args.arch], max_position_embeddings=args.prompt + args.new_tokens + 8)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(getattr(torch, args.dtype)).eval()
    adapter = make_adapter(model, {"kind": "grun", "rank": 4, "gate": "mlp", "gate_weight": 10.0, "dtype": "float32"})
    ids = torch.randint(3, config.vocab_size, (args.batch, args.prompt), device=device)
    mask = torch.ones_like(ids)
    positions = [args.prompt - 1] * args.batch

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def prefill(edit: bool) -> None:
        with torch.no_grad(), (adapter.editing(positions, once=True) if edit else adapter.disabled()):
            model(input_ids=ids, attention_mask=mask)

    def generate(edit: bool) -> None:
        with torch.no_grad(), (adapter.editing(positions, once=True) if edit else adapter.disabled()):
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.new_tokens,
                           min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0)

    for fn in (prefill, generate):
        fn(True), fn(False)
        times: dict[bool, list[float]] = {True: [], False: []}
        for r in range(6 if fn is prefill else 4):
            for edit in ((True, False) if r % 2 == 0 else (False, True)):
                sync()
                t0 = time.perf_counter()
                fn(edit)
                sync()
                times[edit].append(time.perf_counter() - t0)
        on, off = statistics.median(times[True]), statistics.median(times[False])
        print(f"{fn.__name__:<10} edit on {1000 * on:9.2f} ms  off {1000 * off:9.2f} ms  "
              f"difference {1000 * (on - off):8.2f} ms  ({100 * (on / off - 1):.1f}%)  "
              f"all on {[round(1000 * t, 1) for t in times[True]]} off {[round(1000 * t, 1) for t in times[False]]}",
              flush=True)

    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    out = Path(args.out)
    for edit in (True, False):
        with profile(activities=activities) as prof:
            generate(edit)
            sync()
        name = "on" if edit else "off"
        for key in ("cpu_time_total", "cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"):
            table = prof.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=60)
            (out / f"profile_{name}_{key}.txt").write_text(table)
        print(f"== generate, edit {name}, top by cpu_time_total\n"
              + prof.key_averages().table(sort_by="cpu_time_total", row_limit=12, max_name_column_width=50),
              flush=True)


if __name__ == "__main__":
    main()
