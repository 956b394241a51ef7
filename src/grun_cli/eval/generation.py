"""Batched, KV-cached greedy generation from QA prompts (left-padded, cut at eos)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grun_cli.models.template import PromptTemplate


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
    forward only, as in training; decoding steps run unedited (GRUN's generation).

    A batch decodes until its longest answer ends, so batching questions whose answers are
    alike in length saves steps: with ``expected_lengths`` (e.g. the reference answers'
    lengths in an evaluation) questions are ordered by them, else by prompt length."""
    import torch
    from tqdm.auto import tqdm

    from grun_cli.eval.likelihood import edit_context

    prompts = [template.prompt_ids(tokenizer, q) for q in questions]
    order = list(range(len(prompts)))
    if sort_by_length:
        keys = expected_lengths if expected_lengths is not None else [len(p) for p in prompts]
        order.sort(key=lambda i: keys[i])
    out = [""] * len(prompts)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False):
                idx = order[start : start + batch_size]
                width = max(len(prompts[i]) for i in idx)
                ids = torch.tensor([[pad] * (width - len(prompts[i])) + prompts[i] for i in idx])
                mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in idx])
                with edit_context(adapter, [width - 1] * len(idx), once=True):
                    gen = model.generate(
                        input_ids=ids.to(device),
                        attention_mask=mask.to(device),
                        max_new_tokens=max_new_tokens,
                        do_sample=False,
                        pad_token_id=pad,
                        eos_token_id=tokenizer.eos_token_id,
                    )
                for j, i in enumerate(idx):
                    new = gen[j, width:].tolist()
                    if tokenizer.eos_token_id in new:
                        new = new[: new.index(tokenizer.eos_token_id)]
                    out[i] = tokenizer.decode(new, skip_special_tokens=True).strip()
    finally:
        model.train(was_training)
    return out
