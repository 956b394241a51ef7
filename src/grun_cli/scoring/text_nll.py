"""Corpus likelihood: mean token NLL of held-out forget and retain texts.

The signal that unlearning worked on a model too small to answer WMDP questions, and a cheap
check at any scale. Two regions per text: ``*_text_nll`` over the tokens after the text's cut
(where the unlearning losses act and where a GRUN edit, placed before the cut, can act) and
``*_text_nll_all`` over every token. Token-weighted means over the whole set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from grun_cli.logprobs import IGNORE_INDEX
from grun_cli.scoring.likelihood import features_nll


def mean_token_nll(model: Any, tokenizer: Any, feats: Sequence[dict[str, Any]], *, batch_size: int,
                   adapter: Any = None, desc: str = "text NLL") -> float:
    totals, counts = features_nll(model, feats, tokenizer.pad_token_id, batch_size=batch_size, desc=desc,
                                  adapter=adapter)
    return sum(totals) / max(1, sum(counts))


def heldout_nll(model: Any, tokenizer: Any, template: Any, source: Any, max_length: int, *,
                batch_size: int = 32, adapter: Any = None, prefix: str = "",
                sets: Mapping[str, str] | None = None) -> dict[str, float]:
    """``{prefix}{forget,retain}_text_nll[_all]`` on the source's held-out texts."""
    sets = sets or {"forget": "forget_heldout", "retain": "retain_heldout"}
    out: dict[str, float] = {}
    for name, split in sets.items():
        out.update(rows_nll(model, tokenizer, template, source, source.rows(split), max_length,
                            batch_size=batch_size, adapter=adapter, name=f"{prefix}{name}"))
    return out


def corpus_nll(model: Any, tokenizer: Any, template: Any, source: Any, groups: Mapping[str, Sequence[str]],
               max_length: int, *, batch_size: int = 32, adapter: Any = None) -> dict[str, float]:
    """``<group>_forget_text_nll[_all]``: the held-out forget texts of each group's corpora (a
    sequence's requests on text data)."""
    heldout = source.rows("forget_heldout")
    out: dict[str, float] = {}
    for group, corpora in groups.items():
        wanted = set(corpora)
        out.update(rows_nll(model, tokenizer, template, source, [r for r in heldout if r["corpus"] in wanted],
                            max_length, batch_size=batch_size, adapter=adapter, name=f"{group}_forget"))
    return out


def rows_nll(model: Any, tokenizer: Any, template: Any, source: Any, rows: Sequence[Mapping[str, Any]],
             max_length: int, *, batch_size: int, adapter: Any, name: str) -> dict[str, float]:
    """``{name}_text_nll`` (after each text's cut) and ``{name}_text_nll_all`` (every token)."""
    every = [source.encode_for_training(tokenizer, template, r, max_length) for r in rows]
    # the same texts scored after the cut only (as encode_for_unlearning labels them)
    scored = [{**f, "labels": [IGNORE_INDEX] * f["prompt_len"] + f["input_ids"][f["prompt_len"]:]} for f in every]
    return {f"{name}_text_nll": mean_token_nll(model, tokenizer, scored, batch_size=batch_size, adapter=adapter,
                                               desc=f"{name} text NLL"),
            f"{name}_text_nll_all": mean_token_nll(model, tokenizer, every, batch_size=batch_size, adapter=adapter,
                                                   desc=f"{name} text NLL (all)")}
