"""ROUGE-L recall as TOFU defines it (rouge_score, use_stemmer=True)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
    """Per pair: rouge1_recall, rougeL_f1, rougeL_recall (OpenUnlearning's log fields)."""
    scorer = _scorer()
    out = []
    for pred, ref in zip(predictions, references, strict=True):
        s = scorer.score(ref, pred)
        out.append({"rouge1_recall": s["rouge1"].recall, "rougeL_f1": s["rougeL"].fmeasure,
                    "rougeL_recall": s["rougeL"].recall})
    return out


def rouge_l_recall(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """Per-pair ROUGE-L recall of the prediction against the reference answer (TOFU's ROUGE)."""
    return [s["rougeL_recall"] for s in rouge_scores(predictions, references)]
