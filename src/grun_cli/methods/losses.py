"""Loss primitives shared by the unlearning methods (never re-implemented per method).

All log-probabilities of an answer are per-sequence sums over its tokens, as in NPO/DPO and
OpenUnlearning's ``compute_dpo_loss``; ``nll`` arguments are the negatives of those.
"""

from __future__ import annotations

from typing import Any


def npo_loss(nll: Any, ref_nll: Any, beta: float) -> Any:
    """NPO (Zhang et al. 2024): -(2/beta) * mean log sigmoid(-beta * (log p - log p_ref))."""
    import torch.nn.functional as F

    log_ratio = ref_nll - nll  # log p_theta(y|x) - log p_ref(y|x)
    return -(2.0 / beta) * F.logsigmoid(-beta * log_ratio).mean()


def dpo_loss(win_log_ratio: Any, lose_log_ratio: Any, beta: float) -> Any:
    """DPO with OpenUnlearning's scale: -(2/beta) * mean log sigmoid(beta * (r_win - r_lose)),
    where r = log p_theta - log p_ref of the preferred / dispreferred answer."""
    import torch.nn.functional as F

    return -(2.0 / beta) * F.logsigmoid(beta * (win_log_ratio - lose_log_ratio)).mean()


def simnpo_loss(avg_nll: Any, beta: float, delta: float) -> Any:
    """SimNPO (Fan et al. 2024): -(2/beta) * mean log sigmoid(beta * (NLL/|y| - delta)).

    Reference-free: the length-normalised NLL replaces NPO's log-ratio."""
    import torch.nn.functional as F

    return -(2.0 / beta) * F.logsigmoid(beta * (avg_nll - delta)).mean()
