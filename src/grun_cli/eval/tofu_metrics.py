"""TOFU's metrics as pure functions of per-answer average losses (the TOFU / OpenUnlearning
definitions), so each formula can be checked by hand.

Notation: for a question and an answer (its tokens + eos, prompt masked), ``avg_loss`` is the
mean token cross-entropy and ``prob = exp(-avg_loss)``. ``EPS`` is OpenUnlearning's 1e-10
guard in the divisions, kept so values match its logs to the last digit.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

EPS = 1e-10

#: Truth-ratio conventions: "tofu" (standard, default) and "grun_official" (the GRUN release's
#: collector: arithmetic mean of perturbed probabilities, max(0, 1 - TR) on every split).
TRUTH_RATIO_STYLES = ("tofu", "grun_official")

UTILITY_TERMS = (
    "retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio",
    "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio",
    "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio",
)


def prob(avg_loss: float) -> float:
    return math.exp(-avg_loss)


def truth_ratio(correct_loss: float, wrong_losses: Sequence[float], style: str = "tofu") -> float:
    """TR = P_wrong / P_correct.

    tofu: P_wrong = exp(-mean(wrong avg_losses)), the geometric mean of the perturbed answers'
    probabilities; grun_official: their arithmetic mean. P_correct = exp(-correct avg_loss)."""
    if style == "tofu":
        p_wrong = math.exp(-statistics.fmean(wrong_losses))
    elif style == "grun_official":
        p_wrong = statistics.fmean(math.exp(-x) for x in wrong_losses)
    else:
        raise ValueError(f"unknown truth-ratio style {style}")
    return p_wrong / (math.exp(-correct_loss) + EPS)


def closer_to_1_better(ratios: Sequence[float]) -> float:
    """Forget split: mean(min(TR, 1/TR)) — 1 when true and wrong answers are equally likely."""
    return statistics.fmean(min(r, 1 / (r + EPS)) for r in ratios)


def true_better(ratios: Sequence[float]) -> float:
    """Retain / real authors / world facts: mean(max(0, 1 - TR))."""
    return statistics.fmean(max(0.0, 1 - r) for r in ratios)


def aggregate_truth_ratio(ratios: Sequence[float], split: str, style: str = "tofu") -> float:
    if split == "forget" and style == "tofu":
        return closer_to_1_better(ratios)
    return true_better(ratios)


def normalised_prob(correct_loss: float, wrong_losses: Sequence[float]) -> float:
    """P(correct) / (P(correct) + sum P(perturbed)), each P = exp(-avg_loss)."""
    p = math.exp(-correct_loss)
    return p / (p + sum(math.exp(-x) for x in wrong_losses) + EPS)


def forget_quality(model_ratios: Sequence[float], retain_model_ratios: Sequence[float]) -> float:
    """p-value of the two-sample KS test between the per-question forget truth ratios of the
    evaluated model and of the retain model (higher = closer to never having seen the data)."""
    from scipy.stats import ks_2samp

    return float(ks_2samp(list(model_ratios), list(retain_model_ratios)).pvalue)


def model_utility(values: dict[str, float]) -> float:
    """Harmonic mean of the nine utility terms (0 if any is 0)."""
    terms = [values[k] for k in UTILITY_TERMS]
    if any(t <= 0 for t in terms):
        return 0.0
    return len(terms) / sum(1 / t for t in terms)


def roc_auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """P(score of a random positive > score of a random negative), ties counting one half."""
    from scipy.stats import rankdata

    ranks = rankdata(list(positives) + list(negatives))
    n_pos, n_neg = len(positives), len(negatives)
    u = sum(ranks[:n_pos]) - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))
