"""Step time and peak memory of full / LoRA / GRUN unlearning, side by side, as ratios.

Each adapter runs in its own child process (clean peak-memory accounting) on the same
randomly initialised Llama-architecture model, the same method and the same batches:
forget + retain batches of --batch rows x --seq tokens, the answer on the second half.

    python benchmarks/step_cost.py                       # tiny and mid-size on CPU
    python benchmarks/step_cost.py --arch 1b --batch 2 --seq 64 --steps 3 --warmup 1 --reference live cached
    python benchmarks/step_cost.py --arch llama3.1-8b --device cuda --dtype bfloat16 --method npo
    python benchmarks/step_cost.py --count-only --arch llama3.1-8b mistral-7b   # parameters only
    python benchmarks/step_cost.py --json out.json     # also write {arch: {adapter: row}} (grun repro)
    python benchmarks/step_cost.py --rounds 3          # each adapter 3 times, in rotating order
    python benchmarks/step_cost.py --reference live cached   # also each adapter with the cached reference

Timing noise on a shared machine drifts over seconds; --rounds R runs every adapter R times,
rotating their order each round, and reports each adapter's median over the rounds, so a slow
stretch of the machine does not land on one adapter only.

Memory: CUDA peak allocated bytes on a GPU; on CPU the peak resident set size of the child
minus its size right after building the model (the training overhead).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ARCHS = {
    "tiny": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                 intermediate_size=352, vocab_size=4096),
    "mid": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8,
                intermediate_size=1376, vocab_size=32000),
    # Llama-3.2-1B's blocks with a 32k vocabulary and TinyLlama's MLP width: 0.85B parameters, so
    # that full fine-tuning with AdamW (16 bytes a parameter, 13.6 GB) fits a 24 GB CPU machine
    "1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
               intermediate_size=5632, vocab_size=32000, rope_theta=500000.0),
    # SmolLM2-135M-Instruct's shape (model=smollm2): 30 blocks, tied embeddings
    "smollm2": dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                    intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True),
    "llama3.1-8b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                        intermediate_size=14336, vocab_size=128256, rope_theta=500000.0),
    "mistral-7b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       intermediate_size=14336, vocab_size=32000),
}
#: what each adapter sets over its shipped defaults (conf/adapter/<kind>.yaml)
ADAPTERS = {
    "full": {"kind": "full"},
    "lora": {"kind": "lora", "rank": 4, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"},
    "grun": {"kind": "grun", "rank": 4, "gate": "linear", "gate_weight": 10.0},  # paper layers by default
}


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from grun_cli.adapters import make_adapter
    from grun_cli.methods import make_method
    from grun_cli.settings_check import group_settings
    from grun_cli.train.unlearn_trainer import AdapterAccess

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    config = LlamaConfig(**ARCHS[args.arch], max_position_embeddings=max(512, args.seq))
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base_rss = rss_mb()
    kind, _, reference = args.adapter.partition("/")
    adapter = make_adapter(model, group_settings("adapter", ADAPTERS[kind]))
    method = make_method(group_settings("method", {"name": args.method}))
    cached = reference == "cached"
    adapter.prepare(method.needs_reference and not cached)  # cached: no frozen copy for full
    opt = torch.optim.AdamW(adapter.param_groups(0.0), lr=1e-5)
    access = AdapterAccess(adapter)

    def batch() -> dict:
        ids = torch.randint(3, config.vocab_size, (args.batch, args.seq), device=device)
        labels = ids.clone()
        labels[:, : args.seq // 2] = -100
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
                "positions": torch.full((args.batch,), args.seq // 2 - 1, device=device)}

    data = {"forget": batch(), "retain": batch(), "idk": batch()}
    if cached:  # train.reference=cached: the values computed once before training, not timed
        attach_cached_reference(data, method, adapter, access)
    times = []
    profiler = None
    if args.profile:  # the timed steps under torch.profiler: where a step's time goes, kernel by kernel
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    for step in range(args.warmup + args.steps):
        if args.profile and step == args.warmup:
            profiler = profile(activities=activities, record_shapes=True)
            profiler.__enter__()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = method.loss(data, access)["loss"]
        aux = adapter.aux_loss(data, access.forward)
        if aux:
            loss = loss + aux["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    if profiler is not None:
        profiler.__exit__(None, None, None)
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        with open(f"{args.profile}.{args.adapter.replace('/', '_')}.txt", "w") as f:
            f.write(f"{args.arch} {args.adapter} {args.dtype}: {args.steps} steps, median {1000 * statistics.median(times):.1f} ms\n")
            f.write(profiler.key_averages(group_by_input_shape=True).table(sort_by=key, row_limit=40))
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else rss_mb() - base_rss)
    info = adapter.describe()
    return {"adapter": args.adapter, "step_ms": 1000 * statistics.median(times), "peak_mb": peak,
            "trainable": info["trainable_parameters"], "trainable_pct": info["trainable_percent"]}


def attach_cached_reference(data: dict, method: object, adapter: object, access: object) -> None:
    """Put the starting model's reference values (and GRUN's frozen prefix) into the batch, as
    train/reference_cache.py does for every training row before training: the step then runs no
    reference forward, and GRUN only the blocks from its lowest edited one up."""
    from grun_cli.logprobs import sequence_nll
    from grun_cli.train.reference_cache import PREFIX, REF_HIDDEN, REF_LAYER, REF_NLL

    block = adapter.prefix_block()
    if block is not None:
        for part in ("forget", "retain"):
            data[part][PREFIX] = adapter.reference_hidden(data[part], block, starting=True)

    for part, kind in method.references.items():
        inputs = data[part]
        if kind == "nll":
            inputs[REF_NLL] = sequence_nll(adapter.reference_logits(inputs, starting=True), inputs["labels"])[0]
        else:
            layer = access.block(getattr(method, "layer", None))
            inputs[REF_HIDDEN] = adapter.reference_hidden(inputs, layer, starting=True)
            inputs[REF_LAYER] = [layer] * inputs["input_ids"].shape[0]


def count(arch: str, adapter: str) -> dict:
    """Trainable parameters of an adapter at a full-size shape, built on the meta device (no
    memory, no weights): the parameter column of the efficiency table at 7-8B scale."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from grun_cli.adapters import make_adapter
    from grun_cli.settings_check import group_settings

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**ARCHS[arch]))
    # the adapter's own modules are built on the CPU (pyreft's orthogonal init needs values)
    info = make_adapter(model, group_settings("adapter", ADAPTERS[adapter])).describe()  # GRUN: the paper's blocks by default
    return {"adapter": adapter, "trainable": info["trainable_parameters"], "trainable_pct": info["trainable_percent"]}


def run_child(args: argparse.Namespace, arch: str, adapter: str) -> dict:
    cmd = [sys.executable, __file__, "--child", "--arch", arch, "--adapter", adapter, "--method", args.method,
           "--batch", str(args.batch), "--seq", str(args.seq), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--device", args.device, "--dtype", args.dtype,
           "--threads", str(args.threads), *(["--profile", args.profile] if args.profile else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"adapter": adapter, "error": "out of memory" if "out of memory" in proc.stderr.lower() else last}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_row(runs: list[dict]) -> dict:
    """One adapter's row over its rounds: the median step time and peak memory (a failed round
    fails the row: an out-of-memory is not noise)."""
    failed = [r for r in runs if "error" in r]
    if failed:
        return failed[0]
    row = dict(runs[0])
    row["step_ms"] = statistics.median(r["step_ms"] for r in runs)
    row["peak_mb"] = statistics.median(r["peak_mb"] for r in runs)
    row["rounds"] = len(runs)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", nargs="+", default=["tiny", "mid"], choices=sorted(ARCHS))
    ap.add_argument("--adapter", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--method", default="npo")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--rounds", type=int, default=1, help="runs per adapter, in rotating order (median kept)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per child (0: torch's default)")
    ap.add_argument("--reference", nargs="+", default=["live"], choices=["live", "cached"],
                    help="train.reference modes to time (cached rows are named <adapter>/cached)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--count-only", action="store_true", help="trainable parameters only (meta device)")
    ap.add_argument("--json", default=None, help="also write {arch: {adapter: row}} to this file")
    ap.add_argument("--profile", default=None, help="profile the timed steps: <this>.<adapter>.txt per adapter")
    args = ap.parse_args()
    if args.child:
        args.arch = args.arch[0]
        print(json.dumps(child(args)))
        return
    results = count_all(args) if args.count_only else time_all(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


def count_all(args: argparse.Namespace) -> dict[str, dict[str, dict]]:
    results = {}
    for arch in args.arch:
        results[arch] = {a: count(arch, a) for a in ADAPTERS}
        for r in results[arch].values():
            print(f"{arch:<12} {r['adapter']:<6} {r['trainable']:>14,} {r['trainable_pct']:>10.4f}%")
    return results


def recipe_epochs() -> dict[str, int]:
    """Each adapter's paper recipe epochs (conf/train/unlearn_<adapter>.yaml): every forget
    example passes once per epoch, so the time to unlearn is per-example step cost x epochs."""
    import yaml

    from grun_cli.config import config_dir

    return {a: int(yaml.safe_load((config_dir() / "train" / f"unlearn_{a}.yaml").read_text())["epochs"])
            for a in ADAPTERS}


def time_all(args: argparse.Namespace) -> dict[str, dict[str, dict]]:
    results = {}
    print(f"method {args.method}, batch {args.batch} forget + {args.batch} retain x {args.seq} tokens, "
          f"{args.device} {args.dtype}, median of {args.steps} steps"
          + (f", median over {args.rounds} rounds" if args.rounds > 1 else ""))
    names = [a if mode == "live" else f"{a}/cached" for mode in args.reference for a in ADAPTERS]
    epochs = recipe_epochs()
    print("run x full: time to unlearn at each adapter's paper recipe (per-example step cost x epochs: "
          + ", ".join(f"{a} {e}" for a, e in epochs.items()) + "), against live full fine-tuning's")
    for arch in args.arch:
        runs: dict[str, list[dict]] = {a: [] for a in names}
        for r in range(max(1, args.rounds)):
            for a in names[r % len(names):] + names[: r % len(names)]:
                runs[a].append(run_child(args, arch, a))
                done = runs[a][-1]  # a line per run as it ends: a stopped benchmark keeps what it measured
                print(f"  ({arch} {a}: " + (f"failed: {done['error']})" if "error" in done else
                      f"{done['step_ms']:.1f} ms, {done['peak_mb']:.0f} MB)"), flush=True)
        rows = [median_row(runs[a]) for a in names]
        results[arch] = {r["adapter"]: r for r in rows}
        full = results[arch].get("full", rows[0])  # ratios to live full fine-tuning
        print(f"\n{arch}: {json.dumps(ARCHS[arch])}")
        print(f"  {'adapter':<13}{'trainable':>14}{'%':>10}{'step ms':>11}{'x full':>9}{'peak MB':>11}{'x full':>9}"
              f"{'run x full':>12}")
        for r in rows:
            if "error" in r:
                print(f"  {r['adapter']:<13}  failed: {r['error']}")
                continue
            t = f"{r['step_ms'] / full['step_ms']:.2f}" if "step_ms" in full else "-"
            m = f"{r['peak_mb'] / full['peak_mb']:.2f}" if "peak_mb" in full and full["peak_mb"] > 0 else "-"
            kind = r["adapter"].partition("/")[0]
            if "step_ms" in full:
                r["run_vs_full"] = r["step_ms"] * epochs[kind] / (full["step_ms"] * epochs["full"])
            run = f"{r['run_vs_full']:.2f}" if "run_vs_full" in r else "-"
            print(f"  {r['adapter']:<13}{r['trainable']:>14,}{r['trainable_pct']:>10.4f}{r['step_ms']:>11.1f}{t:>9}"
                  f"{r['peak_mb']:>11.1f}{m:>9}{run:>12}")
    return results


if __name__ == "__main__":
    main()
