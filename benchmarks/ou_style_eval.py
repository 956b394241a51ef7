"""An OpenUnlearning-style TOFU evaluation loop: the reference ``eval_speed.py`` times grun
against, and the test checks grun's per-sample values against.

It follows OpenUnlearning's evaluator (``src/evals``): one pass per logged probability metric
(a metric that another one pre-computes is reused from the logs, as OpenUnlearning's cache
does), rows in data order, batches of 32, each perturbed answer's column as its own
mini-batch, the labels passed to the model (which then computes its own loss over the whole
batch) and the per-sample loss taken from the full logits; ROUGE generations through
``model.generate`` in data order with left-padded prompts. No adapter: the loop scores a
plain model, as OpenUnlearning scores a merged checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _prob_pass(model: Any, tokenizer: Any, template: Any, pairs: Sequence[tuple[str, str]], max_length: int,
               batch_size: int) -> list[float]:
    import torch
    import torch.nn.functional as F

    from grun_cli.models.template import IGNORE_INDEX
    from grun_cli.scoring.likelihood import pad_batch

    out: list[float] = []
    device = next(model.parameters()).device
    for start in range(0, len(pairs), batch_size):
        feats = [template.encode(tokenizer, q, a, max_length) for q, a in pairs[start : start + batch_size]]
        batch = {k: v.to(device) for k, v in pad_batch(feats, tokenizer.pad_token_id).items()}
        with torch.no_grad():
            logits = model(**batch).logits  # labels in the batch: the model computes its loss too
        labels = batch["labels"][:, 1:]
        nll = F.cross_entropy(logits[:, :-1].transpose(-1, -2), labels, ignore_index=IGNORE_INDEX,
                              reduction="none").sum(-1)
        out += (nll / (labels != IGNORE_INDEX).sum(-1)).tolist()
    return out


def _generate(model: Any, tokenizer: Any, template: Any, questions: Sequence[str], max_new_tokens: int,
              batch_size: int) -> list[str]:
    import torch

    out: list[str] = []
    device = next(model.parameters()).device
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    for start in range(0, len(questions), batch_size):
        prompts = [template.prompt_ids(tokenizer, q) for q in questions[start : start + batch_size]]
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=pad, eos_token_id=eos)
        for row in gen[:, width:].tolist():
            row = row[: row.index(eos)] if eos in row else row
            out.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return out


def ou_style_eval(model: Any, tokenizer: Any, template: Any, sets: Mapping[str, list[dict[str, Any]]], *,
                  max_length: int, batch_size: int = 32, max_new_tokens: int = 200) -> dict[str, Any]:
    """``{"avg_loss": {(set, metric): [per row]}, "generation": {set: [per row]}, "seconds":
    {part: s}}``; metric is
    ``Prob`` (the answer), ``PARA`` (the paraphrased answer, forget/retain) or ``PERT`` (a
    list per row: the perturbed answers)."""
    import time

    from grun_cli.eval.tofu import _correct_answer

    model.eval()
    started = time.perf_counter()
    t_gen = 0.0
    loss: dict[tuple[str, str], list[Any]] = {}
    gens: dict[str, list[str]] = {}
    for key, rows in sets.items():
        qs = [r["question"] for r in rows]
        loss[(key, "Prob")] = _prob_pass(model, tokenizer, template, list(zip(qs, [r["answer"] for r in rows],
                                                                               strict=True)), max_length, batch_size)
        if key in ("forget", "retain"):
            para = [_correct_answer(key, r) for r in rows]
            loss[(key, "PARA")] = _prob_pass(model, tokenizer, template, list(zip(qs, para, strict=True)),
                                             max_length, batch_size)
        columns = max(len(r["perturbed_answer"]) for r in rows)
        per_column = []
        for c in range(columns):  # OpenUnlearning's intra-item index: one mini-batch per perturbed answer
            have = [i for i, r in enumerate(rows) if c < len(r["perturbed_answer"])]
            values = _prob_pass(model, tokenizer, template, [(qs[i], rows[i]["perturbed_answer"][c]) for i in have],
                                max_length, batch_size)
            per_column.append(dict(zip(have, values, strict=True)))
        loss[(key, "PERT")] = [[col[i] for col in per_column if i in col] for i in range(len(rows))]
        t = time.perf_counter()
        gens[key] = _generate(model, tokenizer, template, qs, max_new_tokens, batch_size)
        t_gen += time.perf_counter() - t
    seconds = {"teacher-forced": time.perf_counter() - started - t_gen, "generation": t_gen}
    return {"avg_loss": loss, "generation": gens, "seconds": seconds}
