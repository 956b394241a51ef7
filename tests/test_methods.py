"""Each method's loss on a hand-built 2-example batch against a value derived by hand.

Vocabulary {0, 1}. An answer token with probability p under the model gets logits
[0, logit(p)] (for token 1) or [0, logit(1-p)] (for token 0). Forget batch: example A has two
answer tokens with p = 1/2, 3/4 (NLL ln 8/3), example B one token with p = 1/4 (NLL ln 4); under
the reference every token has p = 1/2 (NLL 2 ln 2 and ln 2). Retain: every p = 1/2, 2 + 1 tokens.
IDK answers: A' one token p = 3/4, B' one token p = 1/2; reference p = 1/2.
"""

from __future__ import annotations

import math

import pytest
import torch

from grun_cli.errors import GrunError
from grun_cli.methods import available

from conftest import new_method

LN2, LN4, LN83 = math.log(2), math.log(4), math.log(8 / 3)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def make_inputs(rows: list[list[tuple[int, float, float]]]) -> dict[str, torch.Tensor]:
    """rows: per example, answer tokens as (token, p_model, p_reference)."""
    width = 1 + max(len(r) for r in rows)
    labels = torch.full((len(rows), width), -100)
    logits = torch.zeros(len(rows), width, 2)
    ref = torch.zeros(len(rows), width, 2)
    for b, row in enumerate(rows):
        for i, (tok, p, p_ref) in enumerate(row):
            labels[b, i + 1] = tok
            logits[b, i, 1] = _logit(p if tok == 1 else 1 - p)
            ref[b, i, 1] = _logit(p_ref if tok == 1 else 1 - p_ref)
    return {"labels": labels, "logits": logits, "ref_logits": ref}


class FakeModel:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def forward(self, inputs, role):
        self.calls.append(("forward", role))
        return inputs["logits"]

    def reference(self, inputs):
        self.calls.append(("reference", ""))
        return inputs["ref_logits"]

    def reference_nll(self, inputs):  # the live path of AdapterAccess.reference_nll
        from grun_cli.logprobs import sequence_nll

        return sequence_nll(self.reference(inputs), inputs["labels"])[0]


BATCH = {
    "forget": make_inputs([[(1, 0.5, 0.5), (0, 0.75, 0.5)], [(1, 0.25, 0.5)]]),
    "retain": make_inputs([[(0, 0.5, 0.5), (1, 0.5, 0.5)], [(1, 0.5, 0.5)]]),
    "idk": make_inputs([[(0, 0.75, 0.5)], [(1, 0.5, 0.5)]]),
}
FORGET_TOKEN_MEAN = (LN83 + LN4) / 3
RETAIN_TOKEN_MEAN = LN2


def loss_of(name: str, **cfg) -> tuple[dict[str, float], FakeModel]:
    model = FakeModel()
    terms = new_method({"name": name, **cfg}).loss(BATCH, model)
    return {k: v.item() for k, v in terms.items()}, model


def test_all_methods_registered() -> None:
    assert available() == ["ga", "gd", "idk", "idkdpo", "npo", "rmu", "simnpo"]
    with pytest.raises(GrunError, match="unknown method 'nope'"):
        new_method({"name": "nope"})
    with pytest.raises(GrunError, match="method.beta=0"):
        new_method({"name": "npo", "beta": 0})
    with pytest.raises(GrunError, match="method.retain_weight=-1: input should be greater than or equal to 0"):
        new_method({"name": "gd", "retain_weight": -1})


def test_ga() -> None:
    t, model = loss_of("ga")
    assert t["loss"] == pytest.approx(-FORGET_TOKEN_MEAN, abs=1e-6)
    assert "retain_loss" not in t and model.calls == [("forward", "forget")]


def test_gd_with_grun_retain_weight() -> None:
    t, _ = loss_of("gd", retain_weight=2.0)
    assert t["forget_loss"] == pytest.approx(-FORGET_TOKEN_MEAN, abs=1e-6)
    assert t["retain_loss"] == pytest.approx(RETAIN_TOKEN_MEAN, abs=1e-6)
    assert t["loss"] == pytest.approx(-FORGET_TOKEN_MEAN + 2 * LN2, abs=1e-6)


def test_npo() -> None:
    # log ratios: A ln(8/3)->2ln2 gives +ln(3/2); B ln4->ln2 gives -ln2.
    # -(2/0.1) * mean[logsig(-0.1 ln 1.5), logsig(0.1 ln 2)] = 10 * [ln(1 + 1.5^0.1) + ln(1 + 2^-0.1)]
    expected = 10 * (math.log(1 + 1.5**0.1) + math.log(1 + 2**-0.1))
    t, model = loss_of("npo", beta=0.1, forget_weight=100.0)
    assert t["forget_loss"] == pytest.approx(expected, abs=1e-5)
    assert t["loss"] == pytest.approx(100 * expected + LN2, abs=1e-3)
    assert ("reference", "") in model.calls


def test_simnpo() -> None:
    # avg NLL A = ln(8/3)/2, B = ln 4: (1/4.5) * [ln(1 + (3/8)^2.25) + ln(1 + 4^-4.5)]
    expected = (math.log(1 + (3 / 8) ** 2.25) + math.log(1 + 4**-4.5)) / 4.5
    t, model = loss_of("simnpo", beta=4.5, delta=0.0, forget_weight=0.125)
    assert t["forget_loss"] == pytest.approx(expected, abs=1e-6)
    assert t["loss"] == pytest.approx(0.125 * expected + LN2, abs=1e-6)
    assert all(kind == "forward" for kind, _ in model.calls)  # reference-free
    # a margin delta shifts the normalised NLL: delta = ln 4 zeroes example B's argument
    t, _ = loss_of("simnpo", beta=1.0, delta=LN4)
    expected = -(2 / 1.0) * 0.5 * (math.log(1 / (1 + math.exp(-(LN83 / 2 - LN4)))) + math.log(0.5))
    assert t["forget_loss"] == pytest.approx(expected, abs=1e-6)


def test_idk() -> None:
    t, model = loss_of("idk")
    assert t["forget_loss"] == pytest.approx((math.log(4 / 3) + LN2) / 2, abs=1e-6)
    assert t["loss"] == pytest.approx((math.log(4 / 3) + LN2) / 2 + LN2, abs=1e-6)
    assert ("forward", "forget") in model.calls  # IDK prompts are forget prompts


def test_idkdpo() -> None:
    # r_idk: A ln2 - ln(4/3) = ln 1.5, B 0; r_true: A ln 1.5, B -ln2.
    # -(2/0.1) * mean[logsig(0), logsig(0.1 ln 2)] = 10 * [ln 2 + ln(1 + 2^-0.1)]
    expected = 10 * (LN2 + math.log(1 + 2**-0.1))
    t, _ = loss_of("idkdpo", beta=0.1)
    assert t["forget_loss"] == pytest.approx(expected, abs=1e-5)
    assert t["loss"] == pytest.approx(expected + LN2, abs=1e-5)


def test_sum_reduction_of_the_official_lora_baselines() -> None:
    """method.reduction=sum: each answer's summed NLL averaged over the batch (the release's
    manual_grad_diff / manual_npo_grad_diff): forget (ln 8/3 + ln 4) / 2, retain (2 ln2 + ln2) / 2."""
    t, _ = loss_of("gd", reduction="sum")
    assert t["forget_loss"] == pytest.approx(-(LN83 + LN4) / 2, abs=1e-6)
    assert t["retain_loss"] == pytest.approx(3 * LN2 / 2, abs=1e-6)
    assert t["loss"] == pytest.approx(-(LN83 + LN4) / 2 + 3 * LN2 / 2, abs=1e-6)
    npo, _ = loss_of("npo", reduction="sum", forget_weight=0.1375)
    assert npo["retain_loss"] == pytest.approx(3 * LN2 / 2, abs=1e-6)  # NPO's own term is per-sequence already
    with pytest.raises(GrunError, match="method.reduction=token: input should be 'mean' or 'sum'"):
        new_method({"name": "gd", "reduction": "token"})


def test_idk_pooled_as_the_official_baselines() -> None:
    """method.pool=true: refusal tokens (A' ln 4/3, B' ln 2) and retain tokens (3 x ln 2) in one
    token mean: (ln 4/3 + ln 2 + 3 ln 2) / 5; default: the two means added."""
    pooled, model = loss_of("idk", pool=True)
    assert pooled["loss"] == pytest.approx((math.log(4 / 3) + 4 * LN2) / 5, abs=1e-6)
    assert pooled["forget_loss"] == pytest.approx((math.log(4 / 3) + LN2) / 2, abs=1e-6)
    assert model.calls == [("forward", "forget"), ("forward", "retain")]  # the gate still sees both roles
    two_means, _ = loss_of("idk")
    assert two_means["loss"] == pytest.approx((math.log(4 / 3) + LN2) / 2 + LN2, abs=1e-6)
    weighted, _ = loss_of("idk", pool=True, retain_weight=2.0)
    assert weighted["loss"] == pytest.approx((math.log(4 / 3) + LN2 + 2 * 3 * LN2) / 5, abs=1e-6)
