"""TOFU metric formulas against values computed by hand on a 3-question toy."""

from __future__ import annotations

import math

import pytest

from grun_cli.eval.tofu_metrics import (
    UTILITY_TERMS,
    aggregate_truth_ratio,
    closer_to_1_better,
    forget_quality,
    model_utility,
    normalised_prob,
    roc_auc,
    true_better,
    truth_ratio,
)

LN2, LN4, LN8 = math.log(2), math.log(4), math.log(8)


def test_truth_ratio_geometric_vs_official_arithmetic() -> None:
    # P_correct = 1/2; perturbed probabilities 1/2 and 1/8
    assert truth_ratio(LN2, [LN2, LN8]) == pytest.approx((1 / 4) / (1 / 2))  # geometric mean 1/4
    assert truth_ratio(LN2, [LN2, LN8], style="grun_official") == pytest.approx((5 / 16) / (1 / 2))
    with pytest.raises(ValueError):
        truth_ratio(LN2, [LN2], style="other")


def test_truth_ratio_aggregators_on_three_questions() -> None:
    ratios = [0.5, 2.0, 1.0]
    assert closer_to_1_better(ratios) == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert true_better(ratios) == pytest.approx((0.5 + 0 + 0) / 3)
    assert aggregate_truth_ratio(ratios, "forget") == pytest.approx(2 / 3)
    assert aggregate_truth_ratio(ratios, "retain") == pytest.approx(1 / 6)
    assert aggregate_truth_ratio(ratios, "forget", style="grun_official") == pytest.approx(1 / 6)


def test_normalised_probability() -> None:
    assert normalised_prob(LN2, [LN4, LN4]) == pytest.approx(0.5 / (0.5 + 0.25 + 0.25))
    assert normalised_prob(LN2, [LN2, LN2, LN2]) == pytest.approx(0.25)


def test_forget_quality_is_the_ks_p_value() -> None:
    # fully separated samples of 3: 2 of the C(6,3) = 20 orderings are as extreme -> p = 0.1
    assert forget_quality([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(0.1)
    assert forget_quality([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == pytest.approx(1.0)


def test_model_utility_harmonic_mean_of_nine() -> None:
    values = {k: 0.5 for k in UTILITY_TERMS}
    values["wf_Q_A_ROUGE"] = 0.25
    assert model_utility(values) == pytest.approx(9 / (8 * 2 + 4))
    values["ra_Truth_Ratio"] = 0.0
    assert model_utility(values) == 0.0
    with pytest.raises(KeyError):
        model_utility({"retain_Q_A_Prob": 1.0})


def test_roc_auc() -> None:
    # pairs: 0.9>0.1, 0.9>0.85, 0.8>0.1, 0.8<0.85 -> 3/4
    assert roc_auc([0.9, 0.8], [0.1, 0.85]) == pytest.approx(0.75)
    assert roc_auc([0.5], [0.5]) == pytest.approx(0.5)
    assert roc_auc([1.0, 1.0], [0.0]) == pytest.approx(1.0)
