"""Throughput of the TOFU evaluation on the tiny target, and what its batching buys.

Side by side in one run, on the same model and the same requests:
- teacher-forced part: grun's single pass over the distinct (question, answer) pairs, batched
  by length, vs. one pass per metric in data order (OpenUnlearning's way: Prob, PARA, PERT and
  the normalised/truth-ratio passes each on their own, no length sorting);
- generation part: batched KV-cached greedy generation with questions ordered by their
  reference answers' lengths (a batch decodes until its longest answer ends) vs. in data order.

    python benchmarks/eval_speed.py                 # synthetic authors (the offline default)
    GRUN_DATA_DIR=../shared/data python benchmarks/eval_speed.py --data tofu

The tiny target is the one `grun unlearn` uses (built and cached on first use).
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="synthetic", choices=["synthetic", "tofu"])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=200)
    args = ap.parse_args()

    import torch
    from hydra import compose, initialize_config_dir

    from grun_cli.config import config_dir
    from grun_cli.data import make_source
    from grun_cli.eval.generation import greedy_answers
    from grun_cli.eval.likelihood import answer_avg_loss
    from grun_cli.eval.tofu import _correct_answer, eval_sets
    from grun_cli.models.loading import load_model
    from grun_cli.models.target import ensure_target
    from grun_cli.models.template import PromptTemplate

    torch.set_num_threads(torch.get_num_threads())
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        cfg = compose("unlearn", overrides=[f"data={args.data}", "logger=none"])
        source = make_source(cfg.data, data_root=cfg.paths.data_dir)
        loaded = load_model(ensure_target(cfg), source.tokenizer_corpus, cfg.paths.cache_dir)
    model, tok = loaded.model, loaded.tokenizer
    template = PromptTemplate.from_config(cfg.model.template)
    sets = eval_sets(source)

    per_metric: list[tuple[str, str]] = []  # what separate metric passes would score
    for key, rows in sets.items():
        per_metric += [(r["question"], r["answer"]) for r in rows]  # *_Q_A_Prob
        if key in ("forget", "retain"):
            per_metric += [(r["question"], _correct_answer(key, r)) for r in rows]  # PARA
        per_metric += [(r["question"], w) for r in rows for w in r["perturbed_answer"]]  # PERT
        if key in ("ra", "wf"):
            per_metric += [(r["question"], r["answer"]) for r in rows]  # truth ratio's correct side
    distinct = sorted(set(per_metric))
    questions = [r["question"] for rows in sets.values() for r in rows]
    answer_lengths = [len(tok(r["answer"], add_special_tokens=False)["input_ids"])
                      for rows in sets.values() for r in rows]
    kw = dict(max_length=int(cfg.model.max_length), batch_size=args.batch_size)

    def timed(fn):
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    t_ours = timed(lambda: answer_avg_loss(model, tok, template, distinct, **kw))
    t_naive = timed(lambda: answer_avg_loss(model, tok, template, per_metric, sort_by_length=False, **kw))
    g_kw = dict(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    g_ours = timed(lambda: greedy_answers(model, tok, template, questions, expected_lengths=answer_lengths, **g_kw))
    g_naive = timed(lambda: greedy_answers(model, tok, template, questions, sort_by_length=False, **g_kw))

    print(f"TOFU eval on the tiny target ({args.data}: " + ", ".join(f"{k} {len(v)}" for k, v in sets.items())
          + f"), batch {args.batch_size}, {torch.get_num_threads()} threads")
    print(f"  {'part':<16}{'grun':>28}{'per-metric / unsorted':>30}{'speed-up':>10}")
    print(f"  {'teacher-forced':<16}{f'{len(distinct)} seq in {t_ours:.1f} s':>20}{len(distinct) / t_ours:>6.0f}/s"
          f"{f'{len(per_metric)} seq in {t_naive:.1f} s':>22}{len(per_metric) / t_naive:>6.0f}/s"
          f"{t_naive / t_ours:>9.2f}x")
    print(f"  {'generation':<16}{f'{len(questions)} seq in {g_ours:.1f} s':>20}{len(questions) / g_ours:>6.0f}/s"
          f"{f'{len(questions)} seq in {g_naive:.1f} s':>22}{len(questions) / g_naive:>6.0f}/s"
          f"{g_naive / g_ours:>9.2f}x")
    print(f"  full TOFU eval: {t_ours + g_ours:.1f} s (grun) vs {t_naive + g_naive:.1f} s")


if __name__ == "__main__":
    main()
