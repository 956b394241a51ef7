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


def masked_mse(hidden: Any, target: Any, mask: Any) -> Any:
    """Mean squared error over the hidden dimensions of the positions where ``mask`` is true
    (torch's MSELoss restricted to those positions). hidden: (B, T, d); target broadcasts to it."""
    diff = (hidden.float() - target.float()).pow(2).mean(-1)  # (B, T)
    mask = mask.to(diff.dtype)
    return (diff * mask).sum() / mask.sum().clamp(min=1)


def control_vectors(n: int, hidden_size: int, coeff: float, seed: int) -> Any:
    """RMU's control vectors: u ~ U[0, 1)^d normalised to unit length, times ``coeff``.

    Vector k is drawn from its own generator seeded with ``seed + k``: the same seed gives
    the same vectors on every machine, whatever else used the global RNG."""
    import torch

    out = []
    for k in range(n):
        u = torch.rand(hidden_size, generator=torch.Generator().manual_seed(int(seed) + k))
        out.append(u / u.norm() * coeff)
    return torch.stack(out)
