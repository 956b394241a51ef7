"""Sequential unlearning's requests: who each request forgets, which rows it trains on (its
retain set leaves out every author forgotten so far), the settings errors, and the per-group
forget metrics of the evaluation."""

from __future__ import annotations

import pytest

from grun_cli.data import make_source
from grun_cli.errors import GrunError
from grun_cli.unlearning.sequence.requests import author_groups, plan, request_rows, union_split

from conftest import new_adapter


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

    model = fresh(tiny)
    base = model(input_ids=IDS, attention_mask=MASK).logits.detach()
    adapter = new_adapter(model, LORA if kind == "lora" else FULL)
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


# -- base_run=: one more request on an earlier run --------------------------------------------

def _card(tmp_path, data: dict, adapter: dict, sequence: list | None = None):
    import json

    from grun_cli.unlearning.sequence.base_run import BaseRun

    config = {"model": {"name": "tiny", "name_or_path": None}, "target": {"source": "auto"}, "data": data,
              "adapter": adapter, "seed": 42}
    card = {"command": "unlearn", "status": "complete", "config": config, "method": "npo",
            "data": {"forget_split": data["forget_split"], "forget_rows": 20, "retain_rows": 60,
                     "fingerprint": "f", **({"sequence": sequence} if sequence else {})},
            "metrics": {"forget_quality": 0.5}}
    (tmp_path / "run_card.json").write_text(json.dumps(card))
    return BaseRun.read(tmp_path), config


def test_a_base_run_counts_as_its_requests_and_the_next_forgets_only_new_authors(tmp_path) -> None:
    from grun_cli.unlearning.sequence.requests import next_request

    data = {"name": "synthetic", "seed": 0, "num_authors": 200, "qa_per_author": 20, "forget_split": "forget01",
            "retain_split": None, "subset": {"retain_authors": None}}
    base, _ = _card(tmp_path, data, {"kind": "grun", "layers": [1, 2]})
    src = source("forget05")
    earlier = base.requests(src)
    assert [r.authors for r in earlier] == [tuple(sorted({r["author"] for r in src.raw("forget01")}))]
    assert base.union_split("forget05") == "forget05" and base.union_split("forget01") == "forget01"
    more = next_request(src, "forget05", earlier, "forget05")
    assert more.number == 2 and not set(more.authors) & set(earlier[0].authors)
    assert set(more.authors) | set(earlier[0].authors) == {r["author"] for r in src.raw("forget05")}
    (line,) = base.lines(src)  # a single run: one line from its card, its provenance with it
    assert line["request"]["authors"] == list(earlier[0].authors) and line["metrics"] == {"forget_quality": 0.5}
    with pytest.raises(GrunError, match="every one of its authors was forgotten by the base run"):
        next_request(src, "forget01", earlier, "forget01")


def test_a_base_run_sequence_keeps_its_requests(tmp_path) -> None:
    data = {"name": "synthetic", "num_authors": 200, "forget_split": "forget10", "subset": {"retain_authors": None}}
    requests = [{"request": 1, "name": "a", "authors": [3, 4]}, {"request": 2, "name": "b", "authors": [5]}]
    base, _ = _card(tmp_path, data, {"kind": "lora"}, requests)
    assert [(r.number, r.authors) for r in base.requests(None)] == [(1, (3, 4)), (2, (5,))]
    assert base.provenance(None) == requests


@pytest.mark.parametrize("change, match", [
    ({"adapter": {"kind": "lora"}}, "other adapter.kind settings"),
    ({"data": {"num_authors": 100}}, "other data settings (num_authors)"),
    ({"adapter": {"layers": [0]}}, "its GRUN edits have adapter.layers=[1, 2]"),
    ({"sequence": {"requests": 2}}, "give one of the two"),
    ({"data": {"forget_split": "forget10"}}, "never learned forget10's other authors"),
])
def test_a_request_that_does_not_fit_its_base_run_is_named(tmp_path, change: dict, match: str) -> None:
    data = {"name": "synthetic", "num_authors": 200, "forget_split": "forget05", "subset": {"retain_authors": 3}}
    base, config = _card(tmp_path, data, {"kind": "grun", "layers": [1, 2]})
    cfg = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    for group, values in change.items():
        cfg[group] = {**cfg.get(group, {}), **values}
    assert not list(base.mismatches(config))
    problems = list(base.mismatches(cfg))
    assert len(problems) == 1 and match in problems[0], problems


def test_full_weights_load_into_the_base_model_or_are_refused(tmp_path, tiny) -> None:
    import copy

    import torch

    from grun_cli.unlearning.sequence.base_run import load_full_weights

    model = tiny.model
    trained = copy.deepcopy(model)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.01)
    trained.save_pretrained(str(tmp_path / "saved"))
    fresh = copy.deepcopy(model)
    load_full_weights(fresh, tmp_path / "saved")
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), trained.state_dict().values(),
                                                   strict=True))
    with pytest.raises(GrunError, match="holds no"):
        load_full_weights(fresh, tmp_path)


def test_forget_corpora_are_requests_on_text_data() -> None:
    from types import SimpleNamespace

    from grun_cli.unlearning.sequence.requests import Request, corpus_groups

    text = SimpleNamespace(kind="text", has_answers=False, forget_corpora=["bio", "cyber"])
    requests = plan({"requests": ["cyber", "bio"]}, text)
    assert [(r.number, r.corpora, r.authors) for r in requests] == [(1, ("cyber",), ()), (2, ("bio",), ())]
    assert corpus_groups(requests) == {"request_1": ["cyber"], "request_2": ["bio"], "forgotten": ["cyber", "bio"]}
    assert Request.from_record(requests[0].record()) == requests[0]
    rows = SimpleNamespace(rows=lambda split: [{"corpus": c, "split": split} for c in ("bio", "cyber", "retain")])
    forget, retain = request_rows(rows, requests[1], [], "full")
    assert forget == [{"corpus": "bio", "split": "forget"}] and all(r["split"] == "retain" for r in retain)
    for bad, match in ((["bio", "chem"], "chem is not one of data.forget_corpora"), (["bio", "bio"], "listed twice"),
                       (2, "on text data a request is a forget corpus")):
        with pytest.raises(GrunError, match=match):
            plan({"requests": bad}, text)


def test_what_a_stopped_sequence_resumes_from(tmp_path) -> None:
    from grun_cli.resume import resume_overrides
    from grun_cli.unlearning.sequence.resume import check_resumable, requests_done, write_state

    run = tmp_path / "run"
    (run / "requests" / "01" / "trainer").mkdir(parents=True)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text("- sequence=tofu_forget10_in_5\n")
    assert requests_done(run) == 0
    with pytest.raises(GrunError, match="stopped before its first request saved anything"):
        check_resumable(run)
    with pytest.raises(GrunError, match="stopped before its first request saved anything"):  # before anything loads
        resume_overrides("unlearn", [f"resume={run}"])
    (run / "adapter").mkdir()
    write_state(run / "adapter", 2)
    assert requests_done(run) == 2 and check_resumable(run) == "2 finished requests"
    assert resume_overrides("unlearn", [f"resume={run}"])[0] == "sequence=tofu_forget10_in_5"
    (run / "adapter" / "sequence_state.json").write_text('{"requests_done": "two"}')
    with pytest.raises(GrunError, match="is not a request count"):
        requests_done(run)
