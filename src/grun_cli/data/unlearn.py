"""Forget/retain pairing and batching for unlearning.

Each item is one forget example with one retain example (and, for IDK methods, the forget
question with a refusal answer). ``pairing=random`` draws the retain partner afresh each
time an item is fetched (OpenUnlearning's choice: over epochs every retain row is used);
``pairing=fixed`` gives forget row i the same partner in every epoch (the official GRUN code,
which uses only |forget| retain rows).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from grun_cli.errors import GrunError
from grun_cli.models.template import PromptTemplate
from grun_cli.scoring.likelihood import pad_batch
from grun_cli.train.reference_cache import PREFIX, REF_HIDDEN, REF_LAYER, REF_NLL

PAIRINGS = ("random", "fixed")
Feature = dict[str, Any]


class ForgetRetainDataset:
    def __init__(
        self,
        forget: Sequence[Mapping[str, Any]],
        retain: Sequence[Mapping[str, Any]],
        tokenizer: Any,
        template: PromptTemplate,
        max_length: int,
        *,
        pairing: str = "random",
        seed: int = 0,
        idk_answers: Sequence[str] | None = None,
        encode: Callable[[Mapping[str, Any]], Feature] | None = None,
        negatives: Sequence[Feature] | None = None,
    ) -> None:
        """``encode`` turns a row into a feature (default: the QA template); text sources
        pass theirs (the edit before the text's cut). ``negatives``: extra prompts for GRUN's
        gate (data/gate_negatives.py), one per item, drawn from the item's position alone so
        that the retain pairing, resumes and data-parallel shards are as without them."""
        if pairing not in PAIRINGS:
            raise GrunError(f"pairing={pairing} is not one of {', '.join(PAIRINGS)}")
        if not forget or not retain:
            raise GrunError(f"unlearning needs forget and retain rows (got {len(forget)} forget, "
                            f"{len(retain)} retain); check data.forget_split and data.subset")
        self.tokenizer, self.template, self.max_length = tokenizer, template, max_length
        self.forget_rows = list(forget)
        if encode is None:
            def encode(r: Mapping[str, Any]) -> Feature:
                return template.encode(tokenizer, r["question"], r["answer"], max_length)
        self.forget = [encode(r) for r in forget]
        self.retain = [encode(r) for r in retain]
        self.pairing, self.seed = pairing, seed
        self.idk_answers = list(idk_answers) if idk_answers else None
        self._idk: dict[tuple[int, int], Feature] = {}  # (forget row, refusal) -> feature
        self.negatives = list(negatives) if negatives else None
        self._rng = random.Random(seed)
        self._drawn = 0  # _draw calls made on _rng
        self._fetched = 0  # items this process fetched
        self._shard = (0, 1, 1)  # (rank, processes, batch per process): see shard()

    def shard(self, rank: int, processes: int, batch: int) -> None:
        """This process trains on batches ``rank, rank + processes, ...`` of ``batch`` items (a
        data-parallel launch): its random pairing skips the draws the other processes make, so
        every item gets the partner (and refusal) one process would give it."""
        self._shard = (int(rank), int(processes), int(batch))

    def _global_position(self, fetched: int) -> int:
        rank, n, b = self._shard
        return (fetched // b) * n * b + rank * b + fetched % b

    def __len__(self) -> int:
        return len(self.forget)

    def partner(self, index: int) -> int:
        if self.pairing == "fixed":
            return random.Random(self.seed * 1_000_003 + index).randrange(len(self.retain))
        return self._rng.randrange(len(self.retain))

    def _draw(self, index: int) -> tuple[int, int | None]:
        """The random choices of one fetch, in a fixed order: the retain partner, the refusal
        (its index; ``randrange(n)`` draws what ``choice`` of n answers would)."""
        self._drawn += 1
        partner = self.partner(index)
        return partner, (self._rng.randrange(len(self.idk_answers)) if self.idk_answers is not None else None)

    def idk_feature(self, index: int, answer: int) -> Feature:
        """Forget question ``index`` with refusal ``answer``, encoded once (a cached reference
        value, when there is one, rides along in the feature)."""
        key = (index, answer)
        if key not in self._idk:
            assert self.idk_answers is not None
            self._idk[key] = self.template.encode(
                self.tokenizer, self.forget_rows[index]["question"], self.idk_answers[answer], self.max_length)
        return self._idk[key]

    def fast_forward(self, fetched: int) -> None:
        """Put the random pairing where it stood after ``fetched`` items (a resumed run): the
        draws do not depend on which item was fetched, so replaying them is exact."""
        self._rng, self._drawn, self._fetched = random.Random(self.seed), 0, int(fetched)

    def __getitem__(self, index: int) -> dict[str, Feature]:
        target = self._global_position(self._fetched)
        while self._drawn < target:  # the draws of items fetched before (or by other processes)
            self._draw(0)
        self._fetched += 1
        partner, answer = self._draw(index)
        item = {"forget": self.forget[index], "retain": self.retain[partner]}
        if answer is not None:
            item["idk"] = self.idk_feature(index, answer)
        if self.negatives:
            pick = random.Random(self.seed * 7_919 + 104_729 * target + 1).randrange(len(self.negatives))
            item["negative"] = self.negatives[pick]
        return item


class UnlearnCollator:
    """Pads each part of the items; ``positions`` = the last prompt token of every row; cached
    reference values (train/reference_cache.py) are stacked, hidden states zero-padded."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: Sequence[Mapping[str, Feature]]) -> dict[str, dict[str, Any]]:
        import torch

        out = {}
        for key in items[0]:
            feats = [it[key] for it in items]
            batch = pad_batch(feats, self.pad_id)
            batch["positions"] = torch.tensor([f["prompt_len"] - 1 for f in feats])
            if "corpus_id" in feats[0]:  # text corpora: which forget corpus each row is from
                batch["corpus_id"] = torch.tensor([f["corpus_id"] for f in feats])
            if all(REF_NLL in f for f in feats):
                batch[REF_NLL] = torch.stack([f[REF_NLL] for f in feats])
            for name in (REF_HIDDEN, PREFIX):
                if all(name in f for f in feats):
                    batch[name] = _pad_hidden([f[name] for f in feats], batch["input_ids"].shape[1])
            if REF_HIDDEN in batch:
                batch[REF_LAYER] = torch.tensor([f[REF_LAYER] for f in feats])
            out[key] = batch
        return out


def _pad_hidden(hidden: Sequence[Any], width: int) -> Any:
    """Per-row (tokens x hidden) tensors -> one (rows x width x hidden), zero-padded on the right."""
    padded = hidden[0].new_zeros((len(hidden), width, hidden[0].shape[-1]))
    for row, h in enumerate(hidden):
        padded[row, : h.shape[0]] = h
    return padded
