"""TOFU loading from the real local copy (skipped when absent): splits, authors, subsets, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from grun_cli.data import make_source
from grun_cli.data.splits import default_retain_split
from grun_cli.errors import GrunError


def tofu(local_dir: Path | None = None, data_root: Path | None = None, **over):
    cfg = {"name": "tofu", "hub_id": "locuslab/TOFU", "local_dir": str(local_dir) if local_dir else None,
           "forget_split": "forget05", "retain_split": None, "subset": {"retain_authors": None}}
    cfg.update(over)
    return make_source(cfg, data_root=str(data_root) if data_root else None)


@pytest.mark.parametrize(("split", "rows"), [
    ("full", 4000), ("forget01", 40), ("forget05", 200), ("forget10", 400), ("retain99", 3960),
    ("retain95", 3800), ("retain90", 3600), ("forget01_perturbed", 40), ("forget05_perturbed", 200),
    ("forget10_perturbed", 400), ("retain_perturbed", 400), ("real_authors", 100),
    ("real_authors_perturbed", 100), ("world_facts", 117), ("world_facts_perturbed", 117),
])
def test_every_split_loads(tofu_dir: Path, split: str, rows: int) -> None:
    assert len(tofu(tofu_dir).rows(split)) == rows


def test_authors_follow_full_blocks(tofu_dir: Path) -> None:
    src = tofu(tofu_dir)
    assert src.num_authors == 200
    assert src.forget_authors() == list(range(190, 200))
    assert {r["author"] for r in src.rows("retain_perturbed")} == set(range(20))
    assert {r["author"] for r in src.rows("retain")} == set(range(190))
    assert all(r["author"] is None for r in src.rows("world_facts"))
    perturbed = src.rows("forget05_perturbed")[0]
    assert len(perturbed["perturbed_answer"]) == 5 and perturbed["paraphrased_question"]


def test_retain_split_follows_forget_split(tofu_dir: Path) -> None:
    assert default_retain_split("forget01") == "retain99"
    assert default_retain_split("forget10") == "retain90"
    src = tofu(tofu_dir, forget_split="forget10")
    assert src.retain_split == "retain90" and len(src.rows("retain")) == 3600
    assert tofu(tofu_dir, retain_split="retain90").resolve("retain") == "retain90"


def test_author_subset_keeps_forget_and_first_authors(tofu_dir: Path) -> None:
    src = tofu(tofu_dir, subset={"retain_authors": 30})
    full = src.rows("full")
    assert len(full) == 800
    assert {r["author"] for r in full} == set(range(30)) | set(range(190, 200))
    assert len(src.rows("forget")) == 200 and len(src.rows("retain")) == 600
    assert len(src.rows("retain_perturbed")) == 400  # evaluation authors stay inside
    assert len(src.rows("real_authors")) == 100  # author-less splits are untouched


def test_grun_data_dir_and_local_dir_precedence(tofu_dir: Path, tmp_path: Path) -> None:
    assert tofu(data_root=tofu_dir.parent).local_dir == tofu_dir
    other = tmp_path / "mine"
    other.mkdir()
    shutil.copy(tofu_dir / "full.json", other / "full.json")
    src = tofu(other, data_root=tofu_dir.parent)
    assert src.local_dir == other.resolve()
    with pytest.raises(GrunError, match=r"split 'forget05' is missing: no file .*mine/forget05.json"):
        src.rows("forget")


def test_missing_folder_unknown_split_and_empty_subset(tofu_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(GrunError, match="does not exist; point data.local_dir"):
        tofu(tmp_path / "nowhere")
    with pytest.raises(GrunError, match="GRUN_DATA_DIR"):
        tofu(data_root=tmp_path / "nowhere")
    with pytest.raises(GrunError, match="unknown split 'forget07'"):
        tofu(tofu_dir).rows("forget07")
    with pytest.raises(GrunError, match="unknown forget split 'retain90'"):
        tofu(tofu_dir, forget_split="retain90")
    with pytest.raises(GrunError, match="would keep no retain author"):
        tofu(tofu_dir, subset={"retain_authors": 0})
    with pytest.raises(GrunError, match="only 190 authors are outside forget05"):
        tofu(tofu_dir, subset={"retain_authors": 500}).rows("full")
