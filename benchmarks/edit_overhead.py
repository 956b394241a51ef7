"""Inference cost of GRUN's edit: generation and scoring throughput with the edit on vs. the
same model without it, side by side in one process, as ratios (goal: <= 5% overhead).

The model is a randomly initialised Llama-architecture model of the chosen shape; the GRUN
adapter is freshly initialised (its cost does not depend on its values). Generation is greedy,
KV-cached, a fixed number of new tokens (no early eos), the edit on the prompt's last token in
the prefill only (as `grun eval` generates); scoring is one forward over prompt + answer.

    python benchmarks/edit_overhead.py                                   # tiny and mid on CPU
    python benchmarks/edit_overhead.py --arch llama3.1-8b --device cuda --dtype bfloat16 --batch 32
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from step_cost import ARCHS


def measure(args: argparse.Namespace, arch: str) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from grun_cli.adapters import make_adapter
    from grun_cli.settings_check import group_settings

    torch.manual_seed(0)
    device = torch.device(args.device)
    config = LlamaConfig(**ARCHS[arch], max_position_embeddings=args.prompt + args.new_tokens + 8)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(getattr(torch, args.dtype)).eval()
    adapter = make_adapter(model, group_settings("adapter", {"kind": "grun", "gate": "mlp"}))
    ids = torch.randint(3, config.vocab_size, (args.batch, args.prompt), device=device)
    mask = torch.ones_like(ids)
    full = torch.randint(3, config.vocab_size, (args.batch, args.prompt + args.new_tokens), device=device)
    positions = [args.prompt - 1] * args.batch

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def generate(edit: bool) -> None:
        context = adapter.editing(positions, once=True) if edit else adapter.disabled()
        with torch.no_grad(), context:
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.new_tokens,
                           min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0)

    def score(edit: bool) -> None:
        context = adapter.editing(positions) if edit else adapter.disabled()
        with torch.no_grad(), context:
            model(input_ids=full, attention_mask=torch.ones_like(full))

    def timed(fn, edit: bool) -> float:
        sync()
        t0 = time.perf_counter()
        fn(edit)
        sync()
        return time.perf_counter() - t0

    out: dict[str, dict] = {}
    for name, fn in (("generation", generate), ("scoring", score)):
        fn(True), fn(False)  # warm-up
        times: dict[bool, list[float]] = {True: [], False: []}
        for r in range(args.rounds):  # alternate, so a slow stretch hits both
            for edit in ((True, False) if r % 2 == 0 else (False, True)):
                times[edit].append(timed(fn, edit))
        on, off = statistics.median(times[True]), statistics.median(times[False])
        tokens = args.batch * (args.new_tokens if name == "generation" else args.prompt + args.new_tokens)
        out[name] = {"edit_s": on, "plain_s": off, "overhead": on / off - 1.0,
                     "edit_tokens_per_s": tokens / on, "plain_tokens_per_s": tokens / off}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", nargs="+", default=["tiny", "mid"], choices=sorted(ARCHS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--json", default=None, help="also write {arch: {part: row}} to this file")
    args = ap.parse_args()
    results = {}
    print(f"GRUN edit on vs off: batch {args.batch}, prompt {args.prompt} + {args.new_tokens} new tokens, "
          f"{args.device} {args.dtype}, median of {args.rounds} rounds each")
    print(f"  {'shape':<14}{'part':<12}{'edit on s':>11}{'edit off s':>12}{'overhead':>10}{'tokens/s (on)':>15}")
    for arch in args.arch:
        results[arch] = measure(args, arch)
        for part, r in results[arch].items():
            print(f"  {arch:<14}{part:<12}{r['edit_s']:>11.3f}{r['plain_s']:>12.3f}{100 * r['overhead']:>9.1f}%"
                  f"{r['edit_tokens_per_s']:>15.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
