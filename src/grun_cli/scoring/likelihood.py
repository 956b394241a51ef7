"""Teacher-forced answer loss, batched by length (one forward per batch, no repeats)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from grun_cli.inference import inference_mode
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


def left_pad(prompts: Sequence[list[int]], pad_id: int, device: Any = None) -> tuple[Any, Any, Any]:
    """Left-padded prompt ids, their attention mask and position ids (0 at each prompt's
    first real token): every prompt then ends at the same column, where the next token and
    GRUN's edit go."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


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
    from tqdm.auto import tqdm

    order = list(range(len(feats)))
    if sort_by_length:  # similar lengths per batch: little padding
        order.sort(key=lambda i: len(feats[i]["input_ids"]))
    totals, counts = [math.nan] * len(feats), [0] * len(feats)
    device = next(model.parameters()).device
    with inference_mode(model):
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
    return totals, counts


def decoder_and_head(model: Any) -> tuple[Any, Any] | None:
    """The decoder stack and the LM head of a causal LM whose logits are ``head(hidden)``
    (Llama, Mistral, Qwen ...), so that the head can run on chosen positions only; None for
    models that scale or cap their logits (Gemma 2, Cohere), which keep the full forward."""
    config = getattr(model, "config", None)
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None) not in (None, 1.0):
        return None
    try:
        decoder, head = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if decoder is None or head is None or decoder is model:
        return None
    return decoder, head


def shared_prompt_avg_loss(
    model: Any,
    tokenizer: Any,
    template: PromptTemplate,
    pairs: Sequence[tuple[str, str]],
    *,
    max_length: int,
    batch_size: int = 32,
    desc: str = "answer likelihood",
    adapter: Any = None,
) -> list[float]:
    """``answer_avg_loss`` with each question's prompt run once: TOFU scores 6-7 answers per
    question (answer, paraphrase, perturbed ones), so the prompt's forward is shared through
    its KV cache and only the answers' tokens run per pair. The LM head runs only where a
    label is predicted. Same values as ``answer_avg_loss`` up to float rounding (tested).

    A batch holds up to ``batch_size`` answers (at least one question's). With an ``adapter``
    its edit applies at the last prompt token, in the prompt's forward, as in training: the
    answers attend to the edited cache."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    parts = decoder_and_head(model)
    if parts is None:  # logits are not head(hidden): score the plain way
        return answer_avg_loss(model, tokenizer, template, pairs, max_length=max_length, batch_size=batch_size,
                               desc=desc, adapter=adapter)
    decoder, head = parts
    prompts: dict[str, list[int]] = {}
    answers: dict[str, list[tuple[int, list[int]]]] = {}
    for i, (q, a) in enumerate(pairs):
        p = prompts.setdefault(q, template.prompt_ids(tokenizer, q))
        ids = template.answer_ids(tokenizer, a)[: max(0, max_length - len(p))]
        if not ids:
            template.encode(tokenizer, q, a, max_length)  # raises the prompt-too-long error
        answers.setdefault(q, []).append((i, ids))
    # a batch runs every answer to its longest one: order by the longest answer (by prompt
    # length only after it: the prompts run once, their padding costs little)
    order = sorted(prompts, key=lambda q: (max(len(ids) for _, ids in answers[q]), len(prompts[q])))
    batches: list[list[str]] = [[]]
    for q in order:
        if batches[-1] and sum(len(answers[x]) for x in batches[-1]) + len(answers[q]) > batch_size:
            batches.append([])
        batches[-1].append(q)
    out = [math.nan] * len(pairs)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    with inference_mode(model):
        for qs in tqdm(batches, desc=desc, leave=False):
            ids, mask, positions = left_pad([prompts[q] for q in qs], pad, device)
            with edit_context(adapter, [ids.shape[1] - 1] * len(qs)):
                first = decoder(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
            cache = first.cache
            last_hidden = first.last_hidden_state[:, -1]  # predicts each answer's first token
            rows = [(k, i, a) for k, q in enumerate(qs) for i, a in answers[q]]
            owner = torch.tensor([k for k, _, _ in rows], device=device)
            cache.reorder_cache(owner)  # one copy of its question's prompt cache per answer
            a_width = max(len(a) for _, _, a in rows)
            a_ids = torch.tensor([a + [pad] * (a_width - len(a)) for _, _, a in rows], device=device)
            a_mask = torch.tensor([[1] * len(a) + [0] * (a_width - len(a)) for _, _, a in rows], device=device)
            a_pos = mask.sum(-1)[owner, None] + torch.arange(a_width, device=device)
            hidden = decoder(input_ids=a_ids, attention_mask=torch.cat([mask[owner], a_mask], dim=1),
                             position_ids=a_pos, cache=cache, use_cache=False).last_hidden_state
            # the state predicting answer token t: the prompt's last for t = 0, else answer token t - 1
            states = torch.cat([last_hidden[owner, None], hidden[:, :-1]], dim=1)
            keep = a_mask.bool()
            nll = F.cross_entropy(head(states[keep]).float(), a_ids[keep], reduction="none")
            per_row = torch.zeros(len(rows), device=device).index_add_(
                0, keep.nonzero()[:, 0], nll)
            for (_, i, _), value in zip(rows, (per_row / keep.sum(-1)).tolist(), strict=True):
                out[i] = value
    return out
