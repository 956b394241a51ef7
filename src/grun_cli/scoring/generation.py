"""Batched, KV-cached greedy generation from QA prompts (left-padded, cut at eos)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grun_cli.inference import inference_mode
from grun_cli.models.template import PromptTemplate
from grun_cli.scoring.likelihood import decoder_and_head, edit_context, left_pad


def greedy_answers(
    model: Any,
    tokenizer: Any,
    template: PromptTemplate,
    questions: Sequence[str],
    *,
    max_new_tokens: int = 200,
    batch_size: int = 32,
    desc: str = "generation",
    adapter: Any = None,
    sort_by_length: bool = True,
    expected_lengths: Sequence[int] | None = None,
) -> list[str]:
    """Greedy continuation of each question's prompt, decoded without special tokens.

    With an ``adapter`` its edit is applied to the prompt's last token in the prefill
    forward only, as in training; decoding steps run unedited (GRUN's generation). Decoding
    is ``_greedy`` (finished rows leave the batch); transformers' ``generate`` for models
    whose logits are not ``head(hidden)``.

    A batch decodes until its longest answer ends, so batching questions whose answers are
    alike in length saves steps: with ``expected_lengths`` (e.g. the reference answers'
    lengths in an evaluation) questions are ordered by them, else by prompt length."""
    from tqdm.auto import tqdm


    prompts = [template.prompt_ids(tokenizer, q) for q in questions]
    order = list(range(len(prompts)))
    if sort_by_length:
        keys = expected_lengths if expected_lengths is not None else [len(p) for p in prompts]
        order.sort(key=lambda i: keys[i])
    out = [""] * len(prompts)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    parts = decoder_and_head(model)
    with inference_mode(model):
        for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False):
            idx = order[start : start + batch_size]
            ids, mask, positions = left_pad([prompts[i] for i in idx], pad, device)
            width = ids.shape[1]
            if parts is not None:
                new_tokens = _greedy(*parts, ids, mask, positions, adapter, max_new_tokens,
                                     tokenizer.eos_token_id, pad)
            else:  # logits are not head(hidden): transformers' own loop
                with edit_context(adapter, [width - 1] * len(idx), once=True):
                    gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                         do_sample=False, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
                new_tokens = gen[:, width:]
            for j, i in enumerate(idx):
                new = new_tokens[j].tolist()
                if tokenizer.eos_token_id in new:
                    new = new[: new.index(tokenizer.eos_token_id)]
                out[i] = tokenizer.decode(new, skip_special_tokens=True).strip()
    return out


def _greedy(decoder: Any, head: Any, ids: Any, mask: Any, positions: Any, adapter: Any, max_new_tokens: int,
            eos: int, pad: int) -> Any:
    """Greedy decoding of a left-padded batch (``left_pad``) through the decoder's KV cache: the argmax of
    ``head(last hidden state)`` at each step, as transformers' greedy search picks it, but
    with a row leaving the batch (and its cache) once it emits eos, and no per-step logits
    processing: a batch's cost follows its live rows. Returns (batch, steps) new tokens,
    ``pad`` after a row's eos."""
    import torch


    rows, width = ids.shape
    tokens = torch.full((rows, max_new_tokens), pad, dtype=torch.long, device=ids.device)
    with edit_context(adapter, [width - 1] * rows):  # the edit reads the prompt's last token, once
        out = decoder(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    cache, lengths = out.cache, mask.sum(-1)
    nxt = head(out.last_hidden_state[:, -1]).argmax(-1)
    alive = torch.arange(rows, device=ids.device)
    for step in range(max_new_tokens):
        tokens[alive, step] = nxt
        if step == max_new_tokens - 1:
            break
        going = nxt != eos
        if not bool(going.all()):
            if not bool(going.any()):
                break
            keep = going.nonzero()[:, 0]
            cache.batch_select_indices(keep)
            alive, nxt, mask, lengths = alive[keep], nxt[keep], mask[keep], lengths[keep]
        mask = torch.cat([mask, mask.new_ones(len(alive), 1)], dim=1)
        out = decoder(input_ids=nxt[:, None], attention_mask=mask, position_ids=(lengths + step)[:, None],
                      cache=cache, use_cache=True)
        nxt = head(out.last_hidden_state[:, -1]).argmax(-1)
    return tokens
