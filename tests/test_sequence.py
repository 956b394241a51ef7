"""Sequential unlearning's requests: who each request forgets, which rows it trains on (its
retain set leaves out every author forgotten so far), the settings errors, and the per-group
forget metrics of the evaluation."""

from __future__ import annotations

import pytest

from grun_cli.data import make_source
from grun_cli.errors import GrunError
from grun_cli.sequence.requests import author_groups, plan, request_rows, union_split


def source(split: str = "forget10", num_authors: int = 200, retain_authors: int | None = None):
    return make_source({"name": "synthetic", "seed": 0, "num_authors": num_authors, "qa_per_author": 20,
                        "forget_split": split, "retain_split": None, "subset": {"retain_authors": retain_authors}})


def test_forget10_in_5_requests_of_4_authors() -> None:
    src = source()
    requests = plan({"requests": 5, "split": "forget10"}, src)
    forget10 = sorted({r["author"] for r in src.raw("forget10")})
    assert [len(r.authors) for r in requests] == [4] * 5
    assert [a for r in requests for a in r.authors] == forget10  # in order, each author once
    assert [r.number for r in requests] == [1, 2, 3, 4, 5]
    groups = author_groups([(r.number, r.authors) for r in requests[:2]])
    assert groups == {"request_1": forget10[:4], "request_2": forget10[4:8], "forgotten": forget10[:8]}


def test_uneven_counts_spread_the_remainder_first() -> None:
    requests = plan({"requests": 3, "split": "forget10"}, source())
    assert [len(r.authors) for r in requests] == [7, 7, 6]


def test_growing_splits_forget_only_new_authors() -> None:
    src = source()
    requests = plan({"requests": ["forget01", "forget05", "forget10"]}, src)
    assert union_split({"requests": ["forget01", "forget05", "forget10"]}) == "forget10"
    authors = [set(r.authors) for r in requests]
    assert [len(a) for a in authors] == [2, 8, 10]
    assert authors[0] == {r["author"] for r in src.raw("forget01")}
    assert authors[0] | authors[1] == {r["author"] for r in src.raw("forget05")}
    assert not authors[0] & authors[1] and not authors[1] & authors[2]


def test_a_later_retain_set_excludes_every_author_forgotten_so_far() -> None:
    src = source()
    requests = plan({"requests": 5, "split": "forget10"}, src)
    forgotten: list[int] = []
    for request in requests:
        forget, retain = request_rows(src, request, forgotten, "full")
        assert {r["author"] for r in forget} == set(request.authors)
        assert len(forget) == 20 * len(request.authors)
        gone = set(forgotten) | set(request.authors)
        assert not {r["author"] for r in retain} & gone
        # every author not forgotten yet stays, later requests' authors included
        assert {r["author"] for r in retain} == set(range(200)) - gone
        forgotten.extend(request.authors)


def test_retain_split_and_subset_are_honoured() -> None:
    src = source(retain_authors=3, num_authors=30)  # forget10 = 3 authors, 3 others kept
    requests = plan({"requests": 3, "split": "forget10"}, src)
    forget, retain = request_rows(src, requests[1], list(requests[0].authors), "full")
    assert {r["author"] for r in retain} == {0, 1, 2, requests[2].authors[0]}
    _, retain90 = request_rows(src, requests[1], list(requests[0].authors), "retain90")
    assert {r["author"] for r in retain90} == {0, 1, 2}


@pytest.mark.parametrize(("seq", "match"), [
    ({"requests": 30, "split": "forget10"}, "has 20 authors"),
    ({"requests": 5}, "set sequence.split too"),
    ({"requests": ["forget05", "forget01"]}, "forgets no author"),
    ({"requests": ["forget05", "forget10"], "split": "forget05"}, "outside sequence.split"),
    ({"requests": ["forget07"]}, "unknown forget split"),
    ({"requests": "forget10"}, "set sequence.split too"),
])
def test_bad_requests(seq, match: str) -> None:
    with pytest.raises(GrunError, match=match):
        plan(seq, source())


def test_group_metrics_are_the_whole_set_metrics_over_the_group() -> None:
    """A group holding every forget row gives the whole set's numbers; a group's forget quality
    compares its questions with the retain model's on the same questions."""
    from scipy.stats import ks_2samp

    from grun_cli.eval.tofu import group_summary

    def entry(values):
        return {"agg_value": 0.0, "value_by_index": values}

    n = 12
    logs = {"forget_Q_A_Prob": entry({str(i): {"prob": i / n} for i in range(n)}),
            "forget_Q_A_ROUGE": entry({str(i): {"rougeL_recall": (i % 3) / 2} for i in range(n)}),
            "forget_truth_ratio": entry({str(i): {"score": 0.2 + i / n} for i in range(n)})}
    reference = {"forget_truth_ratio": entry({str(i): {"score": 0.9 - i / (2 * n)} for i in range(n)})}
    groups = {"all": list(range(n)), "first": [0, 1, 2, 3]}
    out = group_summary(logs, reference, groups)
    assert out["all_forget_Q_A_Prob"] == pytest.approx(sum(i / n for i in range(n)) / n)
    assert out["first_forget_Q_A_Prob"] == pytest.approx((0 + 1 + 2 + 3) / (4 * n))
    assert out["first_forget_Q_A_ROUGE"] == pytest.approx((0 + 0.5 + 1 + 0) / 4)
    want = ks_2samp([0.2 + i / n for i in range(4)], [0.9 - i / (2 * n) for i in range(4)]).pvalue
    assert out["first_forget_quality"] == pytest.approx(want)
    ratios = [0.2 + i / n for i in range(n)]
    assert out["all_forget_truth_ratio"] == pytest.approx(sum(min(r, 1 / r) for r in ratios) / n, rel=1e-6)
    assert out["all_forget_quality"] == pytest.approx(
        ks_2samp(ratios, [0.9 - i / (2 * n) for i in range(n)]).pvalue)
    assert group_summary(logs, None, {"first": [0, 1]})["first_forget_quality"] is None
    with pytest.raises(GrunError, match="not in the evaluation"):
        group_summary(logs, reference, {"x": [99]})


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_a_later_request_starts_from_the_trained_weights(tiny, kind: str) -> None:
    """LoRA and full fine-tuning go on from the previous request: its reference (cached before
    training, or a live frozen copy) is the model as trained so far, not the base model."""
    import torch
    from test_adapters import FULL, IDS, LORA, MASK, fresh, perturb

    from grun_cli.adapters import make_adapter

    model = fresh(tiny)
    base = model(input_ids=IDS, attention_mask=MASK).logits.detach()
    adapter = make_adapter(model, LORA if kind == "lora" else FULL)
    perturb(adapter)
    inputs = {"input_ids": IDS, "attention_mask": MASK}
    with torch.no_grad():
        trained = adapter.model(**inputs).logits
    assert not torch.equal(trained, base)
    adapter.next_request()
    assert torch.equal(adapter.reference_logits(inputs, starting=True), trained)
    adapter.prepare(needs_reference=True)  # train.reference=live: a frozen copy of the trained model
    perturb(adapter)
    assert torch.equal(adapter.reference_logits(inputs), trained)
