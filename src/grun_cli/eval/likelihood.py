"""Teacher-forced answer loss, batched by length (one forward per batch, no repeats)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from grun_cli.logprobs import sequence_nll
from grun_cli.models.template import IGNORE_INDEX, PromptTemplate


def pad_batch(features: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, Any]:
    """Right-pad input_ids (with pad_id) and labels (with IGNORE_INDEX); build attention_mask."""
    import torch

    width = max(len(f["input_ids"]) for f in features)
    ids, labels, mask = [], [], []
    for f in features:
        n = len(f["input_ids"])
        ids.append(f["input_ids"] + [pad_id] * (width - n))
        labels.append(f["labels"] + [IGNORE_INDEX] * (width - n))
        mask.append([1] * n + [0] * (width - n))
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask)}


def edit_context(adapter: Any, positions: Sequence[int], once: bool = False) -> Any:
    """The adapter's edit at ``positions`` (a no-op without an adapter)."""
    import contextlib

    return adapter.editing(positions, once=once) if adapter is not None else contextlib.nullcontext()


def answer_avg_loss(
    model: Any,
    tokenizer: Any,
    template: PromptTemplate,
    pairs: Sequence[tuple[str, str]],
    *,
    max_length: int,
    batch_size: int = 32,
    desc: str = "answer likelihood",
    adapter: Any = None,
    sort_by_length: bool = True,
) -> list[float]:
    """Mean token cross-entropy of each answer (+eos) given its question, in input order.

    With an ``adapter`` its edit is applied as in training (GRUN: at the last prompt token)."""
    feats = [template.encode(tokenizer, q, a, max_length) for q, a in pairs]
    totals, counts = features_nll(model, feats, tokenizer.pad_token_id, batch_size=batch_size, desc=desc,
                                  adapter=adapter, sort_by_length=sort_by_length)
    return [t / max(1, c) for t, c in zip(totals, counts, strict=True)]


def features_nll(
    model: Any,
    feats: Sequence[dict[str, Any]],
    pad_id: int,
    *,
    batch_size: int = 32,
    desc: str = "likelihood",
    adapter: Any = None,
    sort_by_length: bool = True,
) -> tuple[list[float], list[int]]:
    """Summed cross-entropy over each encoded feature's labels and its label count, in input
    order; the adapter's edit at ``prompt_len - 1`` (the last prompt token, or a text's cut)."""
    import torch
    from tqdm.auto import tqdm

    order = list(range(len(feats)))
    if sort_by_length:  # similar lengths per batch: little padding
        order.sort(key=lambda i: len(feats[i]["input_ids"]))
    totals, counts = [math.nan] * len(feats), [0] * len(feats)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False):
                idx = order[start : start + batch_size]
                batch = pad_batch([feats[i] for i in idx], pad_id)
                positions = [feats[i]["prompt_len"] - 1 for i in idx]
                with edit_context(adapter, positions):
                    logits = model(
                        input_ids=batch["input_ids"].to(device),
                        attention_mask=batch["attention_mask"].to(device),
                    ).logits
                total, count = sequence_nll(logits, batch["labels"].to(device))
                for j, i in enumerate(idx):
                    totals[i], counts[i] = total[j].item(), int(count[j])
    finally:
        model.train(was_training)
    return totals, counts
