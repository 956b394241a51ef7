"""lm-eval throughput (questions per second) of grun's model class, side by side in one run.

On the same model, the same WMDP / MMLU questions and the same batch size:
- ``grun`` (GrunLM): grun's batched log-likelihoods with an attention mask, one forward per
  distinct input, the GRUN edit at each request's last context token;
- ``hf`` (lm-eval's stock HFLM) on the base model: the reference speed without an edit;
- ``grun`` at batch size 1: what an lm-eval glue that ignores the batch size gets.

    GRUN_DATA_DIR=../shared/data python benchmarks/lm_eval_speed.py --limit 200
    python benchmarks/lm_eval_speed.py --run outputs/unlearn/<run> --device cuda

Without --run the tiny WMDP target is used with a freshly initialised GRUN adapter (the
edit's cost does not depend on its training).
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=None, help="a grun unlearn run directory (default: tiny WMDP target)")
    ap.add_argument("--tasks", default="wmdp_bio,mmlu")
    ap.add_argument("--limit", type=int, default=200, help="questions per task")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    import torch
    from hydra import compose, initialize_config_dir
    from lm_eval.models.huggingface import HFLM

    from grun_cli.adapters import make_adapter
    from grun_cli.config import config_dir
    from grun_cli.data import make_source
    from grun_cli.eval.lm_eval_run import make_lm, run_tasks
    from grun_cli.models.loading import load_model, resolve_device
    from grun_cli.models.target import ensure_target
    from grun_cli.settings_check import read_settings

    data_dir = os.environ.get("GRUN_DATA_DIR")
    if args.run:
        from grun_cli.api import load_run

        run = load_run(args.run, device=args.device)
        model, tokenizer, adapter, add_bos = run.model, run.tokenizer, run.adapter, run.template.add_bos
    else:
        with initialize_config_dir(str(config_dir()), version_base=None):
            cfg = compose("unlearn", overrides=["data=wmdp", "method=rmu", "adapter=grun", "logger=none",
                                                f"model.device={args.device}"])
            source = make_source(cfg.data, data_root=cfg.paths.data_dir)
            loaded = load_model(ensure_target(cfg), source.tokenizer_corpus, cfg.paths.cache_dir)
        model, tokenizer, add_bos = loaded.model, loaded.tokenizer, True
        adapter = make_adapter(model, read_settings(cfg, "unlearn").adapter, model_layers=cfg.model.grun_layers)
    device = resolve_device(args.device)
    torch.set_grad_enabled(False)
    eval_cfg = {"tasks": args.tasks.split(","), "limit": args.limit, "task_source": "local" if data_dir else "auto",
                "bootstrap_iters": 1000}

    def timed(name: str, lm) -> tuple[str, float, float, dict]:
        """End-to-end q/s (lm-eval's task building included) and scoring-only q/s (the time
        inside the model class's log-likelihood method)."""
        score = lm._loglikelihood_tokens
        spent = [0.0]

        def wrapped(*a, **k):
            t = time.perf_counter()
            try:
                return score(*a, **k)
            finally:
                spent[0] += time.perf_counter() - t

        lm._loglikelihood_tokens = wrapped
        started = time.perf_counter()
        metrics, _ = run_tasks(lm, eval_cfg, data_dir)
        seconds = time.perf_counter() - started
        n = sum(v for k, v in metrics.items() if k.endswith("_n"))
        return name, n / seconds, n / spent[0], metrics

    base_model = adapter.model.get_base_model() if hasattr(adapter.model, "get_base_model") else adapter.model
    rows = [timed(f"grun, batch {args.batch_size}", make_lm(adapter.model, tokenizer, adapter,
                                                            batch_size=args.batch_size, add_bos=add_bos))]
    with adapter.disabled():
        stock = HFLM(pretrained=base_model, tokenizer=tokenizer, backend="causal", batch_size=args.batch_size,
                     add_bos_token=add_bos)
        rows.append(timed(f"lm-eval HFLM (no edit), batch {args.batch_size}", stock))
    rows.append(timed("grun, batch 1", make_lm(adapter.model, tokenizer, adapter, batch_size=1, add_bos=add_bos)))
    print(f"\nmodel on {device}; tasks {args.tasks}, {args.limit} questions each")
    print(f"  {'':<42} {'end to end':>12} {'scoring':>16}")
    first, first_scoring = rows[0][1], rows[0][2]
    for name, qps, scoring, metrics in rows:
        accs = ", ".join(f"{k}={v:.3f}" for k, v in metrics.items() if k.endswith("_acc"))
        print(f"  {name:<42} {qps:6.1f} q/s {qps / first:4.2f}x {scoring:7.1f} q/s {scoring / first_scoring:4.2f}x"
              f"   ({accs})")


if __name__ == "__main__":
    main()
