"""The TOFU evaluation: grun's against an OpenUnlearning-style loop, side by side on the same
model and the same rows, with the per-sample values compared.

- grun (``grun_cli.eval.tofu.Evaluator``, what ``grun eval`` runs): the distinct (question,
  answer) pairs once, each question's prompt run once and its answers scored from the
  prompt's KV cache, the LM head only where a label is predicted; greedy generation ordered by
  the reference answers' lengths, finished rows leaving the batch;
- OpenUnlearning-style (``ou_style_eval.py``): one pass per probability metric in data order,
  batch 32, each perturbed answer's column its own mini-batch, labels passed to the model,
  per-sample losses from the full logits; ``model.generate`` in data order.

Both include ROUGE scoring. The target is the tiny TOFU target `grun unlearn` uses (built and
cached on first use).

    python benchmarks/eval_speed.py                 # synthetic authors (the offline default)
    GRUN_DATA_DIR=../shared/data python benchmarks/eval_speed.py --data tofu
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="synthetic", choices=["synthetic", "tofu"])
    ap.add_argument("--batch-size", type=int, default=32, help="the OpenUnlearning-style loop's batch")
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--max-rows", type=int, default=None, help="rows per set (spread over authors); default all")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--grun-batch", type=int, default=None, help="grun's scoring batch (default: conf/eval/tofu.yaml)")
    ap.add_argument("--grun-gen-batch", type=int, default=None, help="grun's generation batch (default: conf)")
    ap.add_argument("--model", default=None, help="a checkpoint folder instead of the cached tiny target")
    args = ap.parse_args()

    import torch
    from hydra import compose, initialize_config_dir

    from grun_cli.config import config_dir
    from grun_cli.data import make_source
    from grun_cli.eval.tofu import Evaluator, eval_sets
    from grun_cli.models.loading import load_model
    from grun_cli.models.target import ensure_target
    from grun_cli.models.template import PromptTemplate
    from grun_cli.scoring.rouge import rouge_scores

    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).parent))
    from ou_style_eval import ou_style_eval

    overrides = [f"data={args.data}", "logger=none"] + ([f"model.name_or_path={args.model}"] if args.model else [])
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        cfg = compose("unlearn", overrides=overrides)
        source = make_source(cfg.data, data_root=cfg.paths.data_dir)
        loaded = load_model(ensure_target(cfg), source.tokenizer_corpus, cfg.paths.cache_dir)
    model, tok = loaded.model, loaded.tokenizer
    template = PromptTemplate.from_config(cfg.model.template)
    sets = eval_sets(source, args.max_rows)
    max_length = int(cfg.model.max_length)
    eval_cfg = {**cfg.eval, "max_new_tokens": args.max_new_tokens}  # grun's own batch sizes (conf/eval/tofu.yaml)
    if args.grun_batch:
        eval_cfg["batch_size"] = args.grun_batch
    if args.grun_gen_batch:
        eval_cfg["gen_batch_size"] = args.grun_gen_batch

    parts: dict[str, float] = {}
    warm = {k: v[:2] for k, v in sets.items()}  # first calls (allocator, ROUGE's tokenizer) out of the timing
    Evaluator(model, tok, template, {**eval_cfg, "max_new_tokens": 8}, max_length).run(warm)
    ou_style_eval(model, tok, template, warm, max_length=max_length, batch_size=args.batch_size, max_new_tokens=8)

    class Timed(Evaluator):
        def _losses(self, pairs):  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            out = super()._losses(pairs)
            parts["teacher-forced"] = time.perf_counter() - t
            return out

        def _generations(self, questions):  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            out = super()._generations(questions)
            parts["generation"] = time.perf_counter() - t
            return out

    t = time.perf_counter()
    logs = Timed(model, tok, template, eval_cfg, max_length).run(sets)
    t_grun = time.perf_counter() - t

    t = time.perf_counter()
    ref = ou_style_eval(model, tok, template, sets, max_length=max_length, batch_size=args.batch_size,
                        max_new_tokens=args.max_new_tokens)
    t_ou_model = time.perf_counter() - t
    for key, rows in sets.items():
        rouge_scores(ref["generation"][key], [r["answer"] for r in rows])
    t_ou = time.perf_counter() - t

    # the per-sample values: grun's logs against the loop's
    worst, same, total = 0.0, 0, 0
    for key, rows in sets.items():
        prob = logs[f"{key}_Q_A_Prob"]["value_by_index"]
        pert = logs[f"{key}_Q_A_PERT_Prob"]["value_by_index"]
        rouge = logs[f"{key}_Q_A_ROUGE"]["value_by_index"]
        for i, r in enumerate(rows):
            idx = str(r["index"])
            worst = max(worst, abs(prob[idx]["avg_loss"] - ref["avg_loss"][(key, "Prob")][i]),
                        *(abs(a - b) for a, b in zip(pert[idx]["avg_loss"], ref["avg_loss"][(key, "PERT")][i],
                                                     strict=True)))
            if key in ("forget", "retain"):
                para = logs[f"{key}_Q_A_PARA_Prob"]["value_by_index"][idx]["avg_loss"]
                worst = max(worst, abs(para - ref["avg_loss"][(key, "PARA")][i]))
            same += rouge[idx]["generation"] == ref["generation"][key][i]
            total += 1

    print(f"TOFU eval, {args.data} ({', '.join(f'{k} {len(v)}' for k, v in sets.items())}), batch grun "
          f"{eval_cfg['batch_size']} / {eval_cfg['gen_batch_size']} (scoring / generation), loop {args.batch_size}, "
          f"max {args.max_new_tokens} new tokens, {torch.get_num_threads()} threads, {model.num_parameters():,} params")
    print(f"  {'':<22}{'grun':>10}{'OpenUnlearning-style':>24}{'speed-up':>10}")
    print(f"  {'teacher-forced + gen.':<22}{sum(parts.values()):>9.1f}s{t_ou_model:>23.1f}s"
          f"{t_ou_model / sum(parts.values()):>9.2f}x")
    for part in ("teacher-forced", "generation"):
        ours, theirs = parts[part], ref["seconds"][part]
        print(f"    {part:<20}{ours:>9.1f}s{theirs:>23.1f}s{theirs / ours:>9.2f}x")
    print(f"  {'whole eval (+ ROUGE)':<22}{t_grun:>9.1f}s{t_ou:>23.1f}s{t_ou / t_grun:>9.2f}x")
    print(f"  per-sample avg losses: largest difference {worst:.2e}; generations identical: {same}/{total}")


if __name__ == "__main__":
    main()
