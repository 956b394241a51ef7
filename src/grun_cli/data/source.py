"""A QA data source: named splits of TOFU-schema rows, author subsets, forget/retain aliases.

Rows are plain dicts with TOFU's fields (question, answer, and for *_perturbed splits
paraphrased_answer, perturbed_answer, paraphrased_question) plus ``index`` (the row's position
in its split, the key of per-sample logs) and ``author`` (the 0-based author block in ``full``;
None for real_authors / world_facts).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import statistics
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from grun_cli.data.splits import (
    ALL_SPLITS,
    AUTHOR_SPLITS,
    check_split,
    default_retain_split,
    forget_percent,
)
from grun_cli.errors import GrunError
from grun_cli.logprobs import IGNORE_INDEX

log = logging.getLogger(__name__)

Row = dict[str, Any]


@runtime_checkable
class Source(Protocol):
    """The data seam the engines read: QA rows in TOFU's schema (``QASource``: TOFU, the
    synthetic authors) or text corpora with held-out texts (``TextSource``: WMDP). What differs
    between the two (a probe's answer probability or held-out NLL, which prompts the gate is
    read on, what a fine-tune checks) is a member here, so the engines hold no branch on the
    kind of data; ``has_answers`` says what only QA data can do (TOFU's evaluation, refusal
    answers, author requests)."""

    name: str
    kind: str  # "qa" | "text": recorded in run cards
    has_answers: bool  # QA pairs (TOFU's metrics, refusals, requests of authors) or texts (corpora)
    forget_split: str  # a split name (QA) or the forget corpora joined by "+" (text)
    retain_split: str

    def resolve(self, split: str) -> str:
        """The concrete split a name stands for (``forget`` / ``retain`` aliases, checked)."""

    def rows(self, split: str) -> list[Row]:
        """The rows of a split: QA pairs with ``index`` and ``author``, or texts with their cut."""

    def describe(self) -> str:
        """Where the data comes from, for logs and run cards."""

    def tokenizer_corpus(self) -> list[str]:
        """Texts a tokenizer is trained on (the tiny model's)."""

    def encode_for_training(self, tokenizer: Any, template: Any, row: Row, max_length: int) -> dict[str, Any]:
        """One row as fine-tuning features (labels on the answer / the text after its cut)."""

    def encode_for_unlearning(self, tokenizer: Any, template: Any, row: Row, max_length: int) -> dict[str, Any]:
        """One row as unlearning features, with the position GRUN edits."""

    def probe_sets(self, forget_rows: list[Row], retain_rows: list[Row], n: int) -> dict[str, list[Row]]:
        """The rows an unlearning run probes before and after training (at most ``n`` a set)."""

    def probe(self, model: Any, tokenizer: Any, template: Any, sets: Mapping[str, list[Row]], max_length: int,
              batch_size: int, adapter: Any = None, prefix: str = "") -> dict[str, float]:
        """The quick check before and after unlearning (not the evaluation)."""

    def heldout_nll(self, model: Any, tokenizer: Any, template: Any, max_length: int, batch_size: int,
                    adapter: Any = None, prefix: str = "") -> dict[str, float]:
        """The NLL of the held-out forget / retain texts; {} for data without held-out texts."""

    def training_check(self, model: Any, tokenizer: Any, template: Any, rows: list[Row], check: Mapping[str, Any],
                       max_length: int) -> dict[str, float]:
        """What a fine-tune measures of its result (``check``: the run's check group)."""

    def gate_sets(self, probe_sets: Mapping[str, list[Row]]) -> dict[str, list[Row]]:
        """The rows the gate diagnostics read after a run that skipped the evaluation."""

    def gate_prompt(self, tokenizer: Any, template: Any, row: Row, max_length: int) -> list[int]:
        """A row's tokens up to where the gate reads it (the edit's position)."""

    def gate_negative(self, tokenizer: Any, template: Any, text: str, max_length: int) -> dict[str, Any] | None:
        """A gate negative prompt as features (None: longer than ``max_length``, left out)."""


class QASource(ABC):
    """Common logic of TOFU and the synthetic authors; subclasses only fetch raw splits."""

    name: str
    kind = "qa"
    has_answers = True

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.forget_split: str = cfg["forget_split"]
        forget_percent(self.forget_split)  # validate early
        self.retain_split: str = cfg.get("retain_split") or default_retain_split(
            self.forget_split
        )
        check_split(self.retain_split)
        subset = cfg.get("subset") or {}
        n = subset.get("retain_authors")
        if n is not None and int(n) < 1:
            raise GrunError(
                f"data.subset.retain_authors={n} would keep no retain author; use a positive "
                "number, or null for every author"
            )
        self.subset_retain_authors: int | None = None if n is None else int(n)
        self._cache: dict[str, list[Row]] = {}
        self._kept: set[int] | None = None

    # -- to implement -------------------------------------------------------------------
    @abstractmethod
    def _load_raw(self, split: str) -> list[Row]:
        """Rows of one split exactly as published (no author field needed)."""

    @abstractmethod
    def describe(self) -> str:
        """Where the rows come from, for logs and run cards."""

    # -- shared ---------------------------------------------------------------------------
    def resolve(self, split: str) -> str:
        """Map the aliases forget / retain to this run's split names."""
        if split == "forget":
            return self.forget_split
        if split == "retain":
            return self.retain_split
        check_split(split)
        return split

    def raw(self, split: str) -> list[Row]:
        """All rows of a split with their author index, before any subset."""
        if split not in self._cache:
            rows = [{**r, "index": i} for i, r in enumerate(self._load_raw(split))]
            if not rows:
                raise GrunError(f"{self.describe()}: split '{split}' is empty")
            if split in AUTHOR_SPLITS:
                self._attach_authors(split, rows)
            else:
                for r in rows:
                    r["author"] = None
            self._cache[split] = rows
        return self._cache[split]

    def _attach_authors(self, split: str, rows: list[Row]) -> None:
        # TOFU's `full` holds 20-row author blocks in order; other splits are found in it
        # by (question, answer) — questions alone are not unique.
        full = self._cache.get("full") if split != "full" else rows
        if full is None:
            full = self.raw("full")
        per_author = self.qa_per_author
        index = {(r["question"], r["answer"]): i for i, r in enumerate(full)}
        for r in rows:
            i = index.get((r["question"], r["answer"]))
            if i is None:
                raise GrunError(
                    f"{self.describe()}: a row of '{split}' is not in 'full' "
                    f"({r['question'][:60]!r}); the local copy looks mixed from different releases"
                )
            r["author"] = i // per_author

    @property
    def qa_per_author(self) -> int:
        return 20

    @property
    def num_authors(self) -> int:
        return len(self.raw("full")) // self.qa_per_author

    def forget_authors(self) -> list[int]:
        return sorted({r["author"] for r in self.raw(self.forget_split)})

    def kept_authors(self) -> set[int] | None:
        """Authors kept by data.subset (forget authors + the first N others), None = all."""
        if self.subset_retain_authors is None:
            return None
        if self._kept is None:
            forget = set(self.forget_authors())
            others = [a for a in range(self.num_authors) if a not in forget]
            if self.subset_retain_authors > len(others):
                raise GrunError(
                    f"data.subset.retain_authors={self.subset_retain_authors} but only "
                    f"{len(others)} authors are outside {self.forget_split}; lower it or use null"
                )
            self._kept = forget | set(others[: self.subset_retain_authors])
        return self._kept

    def rows(self, split: str) -> list[Row]:
        """Rows of a split (aliases allowed) restricted to the author subset."""
        name = self.resolve(split)
        rows = self.raw(name)
        kept = self.kept_authors()
        if kept is not None and name in AUTHOR_SPLITS:
            rows = [r for r in rows if r["author"] in kept]
            if not rows:
                raise GrunError(
                    f"split '{name}' has no rows left after data.subset.retain_authors="
                    f"{self.subset_retain_authors}; raise it or set it to null"
                )
        return rows

    def encode_for_training(self, tokenizer: Any, template: Any, row: Row, max_length: int) -> dict[str, Any]:
        """Prompt + answer, loss on the answer (the same for fine-tuning and unlearning)."""
        return template.encode(tokenizer, row["question"], row["answer"], max_length)

    encode_for_unlearning = encode_for_training

    def probe_sets(self, forget_rows: list[Row], retain_rows: list[Row], n: int) -> dict[str, list[Row]]:
        return {"forget": spread(forget_rows, n), "retain": spread(retain_rows, n)}

    def probe(self, model: Any, tokenizer: Any, template: Any, sets: Mapping[str, list[Row]], max_length: int,
              batch_size: int, adapter: Any = None, prefix: str = "") -> dict[str, float]:
        """Mean answer probability on each probe set."""
        from grun_cli.scoring.likelihood import answer_avg_loss

        out = {}
        for name, rows in sets.items():
            if not rows:
                continue
            losses = answer_avg_loss(model, tokenizer, template, [(r["question"], r["answer"]) for r in rows],
                                     max_length=max_length, batch_size=batch_size,
                                     desc=f"probe {prefix}{name}", adapter=adapter)
            out[f"{prefix}{name}_answer_prob"] = statistics.fmean(math.exp(-x) for x in losses)
        return out

    def heldout_nll(self, model: Any, tokenizer: Any, template: Any, max_length: int, batch_size: int,
                    adapter: Any = None, prefix: str = "") -> dict[str, float]:
        return {}  # QA data holds no held-out texts: TOFU's evaluation measures it

    def training_check(self, model: Any, tokenizer: Any, template: Any, rows: list[Row], check: Mapping[str, Any],
                       max_length: int) -> dict[str, float]:
        """Memorisation: mean answer probability and greedy ROUGE-L recall on (up to
        ``check.max_rows`` of) the training QA."""
        from grun_cli.scoring.generation import greedy_answers
        from grun_cli.scoring.likelihood import answer_avg_loss
        from grun_cli.scoring.rouge import rouge_l_recall

        sample = spread(rows, int(check["max_rows"]))
        if not sample:
            return {}
        bs = int(check["batch_size"])
        losses = answer_avg_loss(model, tokenizer, template, [(r["question"], r["answer"]) for r in sample],
                                 max_length=max_length, batch_size=bs, desc="check: answer probability")
        gens = greedy_answers(model, tokenizer, template, [r["question"] for r in sample],
                              max_new_tokens=int(check["max_new_tokens"]), batch_size=bs,
                              desc="check: greedy generation")
        rouge = rouge_l_recall(gens, [r["answer"] for r in sample])
        return {"check_rows": len(sample),
                "train_answer_prob": statistics.fmean(math.exp(-x) for x in losses),
                "train_rouge_l_recall": statistics.fmean(rouge)}

    def gate_sets(self, probe_sets: Mapping[str, list[Row]]) -> dict[str, list[Row]]:
        return {k: v for k, v in probe_sets.items() if v}

    def gate_prompt(self, tokenizer: Any, template: Any, row: Row, max_length: int) -> list[int]:
        return template.prompt_ids(tokenizer, row["question"])

    def gate_negative(self, tokenizer: Any, template: Any, text: str, max_length: int) -> dict[str, Any] | None:
        """The prompt template around the question, the gate at its last token."""
        ids = template.prompt_ids(tokenizer, text)
        if len(ids) >= max_length:
            return None
        return {"input_ids": ids, "labels": [IGNORE_INDEX] * len(ids), "prompt_len": len(ids)}

    def tokenizer_corpus(self) -> list[str]:
        """Every text of the data set (all splits, all answer variants), subset-independent,
        so target and retain models built on it share one tokenizer."""
        texts: list[str] = []
        for split in ("full", "forget10_perturbed", "retain_perturbed",
                      "real_authors_perturbed", "world_facts_perturbed"):
            try:
                rows = self.raw(split)
            except GrunError as e:
                if split == "full":
                    raise
                log.warning("tokenizer corpus: skipping %s (%s)", split, e)
                continue
            for r in rows:
                texts.append(r["question"])
                texts.append(r["answer"])
                for key in ("paraphrased_question", "paraphrased_answer"):
                    if r.get(key):
                        texts.append(r[key])
                texts.extend(r.get("perturbed_answer") or [])
        return texts


def spread(rows: list[Row], n: int) -> list[Row]:
    """Up to ``n`` rows spread evenly over the list (so over authors), deterministically."""
    if n <= 0:
        return []
    if len(rows) <= n:
        return list(rows)
    step = len(rows) / n
    return [rows[int(i * step)] for i in range(n)]


def fingerprint(rows: list[Row]) -> str:
    """A short hash of the rows' content (QA pairs or texts), recorded in run cards."""
    h = hashlib.sha256()
    for r in rows:
        content = [r["text"]] if "text" in r else [r["question"], r["answer"]]
        h.update(json.dumps(content, ensure_ascii=False).encode())
    return h.hexdigest()[:16]


__all__ = ["ALL_SPLITS", "QASource", "Row", "fingerprint", "spread"]
