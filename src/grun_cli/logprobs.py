"""Answer log-likelihoods from logits: the one place next-token NLL is computed."""

from __future__ import annotations

from typing import Any

IGNORE_INDEX = -100


def sequence_nll(logits: Any, labels: Any) -> tuple[Any, Any]:
    """Per-example summed NLL over label tokens and their count (labels shifted by one).

    Returns ``(nll_sum, n_tokens)``, both of shape (batch,).
    """
    import torch.nn.functional as F

    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    nll = F.cross_entropy(
        shift_logits.transpose(1, 2), shift_labels, ignore_index=IGNORE_INDEX, reduction="none"
    )
    return nll.sum(-1), (shift_labels != IGNORE_INDEX).sum(-1)


def token_mean_nll(logits: Any, labels: Any) -> Any:
    """Mean NLL over every answer token of the batch (what HF's ``model(...).loss`` gives)."""
    total, count = sequence_nll(logits, labels)
    return total.sum() / count.sum().clamp(min=1)


REDUCTIONS = ("mean", "sum")


def answer_nll(logits: Any, labels: Any, reduction: str = "mean") -> Any:
    """The NLL term of a batch: ``mean`` = over every answer token (HF's loss, the standard),
    ``sum`` = each answer's summed NLL, averaged over the batch (the official GRUN release's
    LoRA baselines, its ``manual_*`` losses): longer answers weigh more, and the term is roughly
    the answer length times larger."""
    if reduction == "mean":
        return token_mean_nll(logits, labels)
    total, _ = sequence_nll(logits, labels)
    return total.mean()
