"""The synthetic authors: TOFU's schema, determinism, split consistency, disk round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from grun_cli.data import make_source
from grun_cli.data.splits import ALL_SPLITS
from grun_cli.data.synthetic import generate, write_splits
from grun_cli.errors import GrunError

PERTURBED_KEYS = {"question", "answer", "paraphrased_answer", "perturbed_answer", "paraphrased_question"}


def synthetic(**over):
    cfg = {"name": "synthetic", "seed": 0, "num_authors": 200, "qa_per_author": 20,
           "forget_split": "forget05", "retain_split": None, "subset": {"retain_authors": None}}
    cfg.update(over)
    return make_source(cfg)


def test_schema_matches_tofu() -> None:
    s = generate()
    assert set(s) == set(ALL_SPLITS)
    assert all(set(r) == {"question", "answer"} for r in s["full"])
    for split in ("forget01_perturbed", "forget05_perturbed", "forget10_perturbed", "retain_perturbed"):
        for r in s[split]:
            assert set(r) == PERTURBED_KEYS
            assert len(r["perturbed_answer"]) == 5 and r["answer"] not in r["perturbed_answer"]
            assert len(set(r["perturbed_answer"])) == 5 and r["paraphrased_answer"] not in r["perturbed_answer"]
    for split in ("real_authors_perturbed", "world_facts_perturbed"):
        assert all(len(r["perturbed_answer"]) == 3 and r["answer"] not in r["perturbed_answer"] for r in s[split])
    # unique (question, answer) pairs, so rows map back to their author
    assert len({(r["question"], r["answer"]) for r in s["full"]}) == len(s["full"])


def test_deterministic_from_seed() -> None:
    assert generate(seed=3) == generate(seed=3)
    assert generate(seed=3)["full"] != generate(seed=4)["full"]


@pytest.mark.parametrize(("forget", "retain", "n_forget"), [("forget01", "retain99", 40),
                                                            ("forget05", "retain95", 200),
                                                            ("forget10", "retain90", 400)])
def test_splits_are_consistent(forget: str, retain: str, n_forget: int) -> None:
    src = synthetic(forget_split=forget)
    f, r = src.rows("forget"), src.rows("retain")
    assert src.retain_split == retain and len(f) == n_forget and len(f) + len(r) == 4000
    fa, ra = {x["author"] for x in f}, {x["author"] for x in r}
    assert not fa & ra and fa | ra == set(range(200))
    assert fa == set(range(200 - n_forget // 20, 200))
    assert [(x["question"], x["answer"]) for x in src.rows(f"{forget}_perturbed")] == [
        (x["question"], x["answer"]) for x in f]
    assert {x["author"] for x in src.rows("retain_perturbed")} == set(range(20))


def test_subset_and_sizes() -> None:
    src = synthetic(num_authors=40, subset={"retain_authors": 5})
    assert src.num_authors == 40 and src.forget_authors() == [38, 39]
    assert {r["author"] for r in src.rows("full")} == {0, 1, 2, 3, 4, 38, 39}
    with pytest.raises(GrunError, match="too small"):
        synthetic(num_authors=10)


def test_written_files_load_as_tofu(tmp_path: Path) -> None:
    write_splits(tmp_path, seed=1, num_authors=40)
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == sorted(ALL_SPLITS)
    tofu = make_source({"name": "tofu", "local_dir": str(tmp_path), "forget_split": "forget10",
                        "subset": {"retain_authors": None}})
    syn = synthetic(seed=1, num_authors=40, forget_split="forget10")
    for split in ("full", "forget10_perturbed", "retain90", "world_facts_perturbed"):
        assert tofu.rows(split) == syn.rows(split)
