"""Plain-text corpora (data=wmdp): the cut / edit position, held-out texts, corpus ids, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from grun_cli.data import make_source
from grun_cli.data.text import encode_text
from grun_cli.errors import GrunError
from grun_cli.logprobs import IGNORE_INDEX
from grun_cli.models.template import PromptTemplate

from conftest import SHARED_DATA, write_text_corpora


class WordTokenizer:
    """One token per word; ids from 10; BOS 1."""

    bos_token_id = 1

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [10 + len(w) for w in text.split()]}


def test_encode_text_cut_at_the_fraction_with_bos_counted() -> None:
    # BOS + 9 words = 10 tokens; cut = int(0.8 * 10) = 8: edit on token 7, labels from 8 on.
    feat = encode_text(WordTokenizer(), "a bb ccc d ee fff g hh iii", 512, 0.8)
    assert len(feat["input_ids"]) == 10 and feat["input_ids"][0] == 1
    assert feat["prompt_len"] == 8
    assert feat["labels"] == [IGNORE_INDEX] * 8 + feat["input_ids"][8:]
    every = encode_text(WordTokenizer(), "a bb ccc d ee fff g hh iii", 512, 0.8, label_all=True)
    assert every["labels"] == [IGNORE_INDEX] + every["input_ids"][1:]
    assert every["prompt_len"] == 8
    short = encode_text(WordTokenizer(), "a bb ccc d ee fff g hh iii", 5, 0.5)  # cut to 5 tokens
    assert len(short["input_ids"]) == 5 and short["prompt_len"] == 2
    with pytest.raises(GrunError, match="too short"):
        encode_text(WordTokenizer(), "", 512, 0.8)


def source_cfg(folder: Path, **extra) -> dict:
    return {"name": "wmdp", "kind": "text", "local_dir": str(folder), "forget_corpora": ["bio", "cyber"],
            "retain_corpora": ["retain"], "heldout": 5, "min_chars": 0, "edit_fraction": 0.8, "max_tokens": 512,
            "corpora": {"bio": {"file": "merge_forget_data_sum_gpt.jsonl"},
                        "cyber": {"file": "cyber_forget_data_sum_gpt.jsonl"},
                        "retain": {"file": "merge_retain_data_sum_gpt.jsonl"}}, **extra}


def test_text_source_splits(tmp_path: Path) -> None:
    source = make_source(source_cfg(write_text_corpora(tmp_path)))
    forget, held = source.rows("forget"), source.rows("forget_heldout")
    assert len(forget) == 50 and len(held) == 10
    assert {r["corpus_id"] for r in forget} == {0, 1}
    assert {r["text"] for r in forget}.isdisjoint({r["text"] for r in held})
    assert [r["index"] for r in held if r["corpus"] == "bio"] == [25, 26, 27, 28, 29]  # the last 5
    retain = source.rows("retain")
    assert len(retain) == 25 and {r["corpus_id"] for r in retain} == {-1}
    assert len(source.rows("full")) == 75  # what a tiny target learns: no held-out text
    assert len(source.tokenizer_corpus()) == 90
    assert source.kind == "text" and source.forget_split == "bio+cyber"
    with pytest.raises(GrunError, match="does not exist"):
        source.rows("forget05")


def test_qa_and_text_sources_are_one_seam(tmp_path: Path) -> None:
    """Both kinds of data source offer every member of the Source protocol the engines read."""
    from grun_cli.data import Source

    text = make_source(source_cfg(write_text_corpora(tmp_path)))
    qa = make_source({"name": "synthetic", "seed": 0, "num_authors": 40, "qa_per_author": 20,
                      "forget_split": "forget05", "retain_split": None, "subset": {"retain_authors": None}})
    assert isinstance(text, Source) and isinstance(qa, Source)
    assert (text.kind, qa.kind) == ("text", "qa") and (text.has_answers, qa.has_answers) == (False, True)
    assert not isinstance(object(), Source)
    forget, retain = qa.rows("forget"), qa.rows("retain")
    assert [len(v) for v in qa.probe_sets(forget, retain, 5).values()] == [5, 5]
    assert text.probe_sets(text.rows("forget"), text.rows("retain"), 5) == {}  # the probe reads held-out texts
    assert set(text.gate_sets({})) == {"forget", "retain"} and qa.gate_sets({"forget": [], "retain": retain}) \
        == {"retain": retain}


def test_no_engine_branches_on_the_kind_of_data() -> None:
    """What differs between QA and text data is a member of the Source protocol, not an ``if``."""
    import re

    src = Path(__file__).resolve().parents[1] / "src" / "grun_cli"
    found = [f"{p.relative_to(src)}:{i}" for p in src.rglob("*.py")
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r"source\.kind\b|data\.get\(\"kind\"\)\s*[!=]=", line)]
    assert not found, found


def test_text_source_errors(tmp_path: Path) -> None:
    folder = write_text_corpora(tmp_path)
    with pytest.raises(GrunError, match="not found"):
        make_source(source_cfg(folder, corpora={"bio": {"file": "x.jsonl"}, "cyber": {"file": "x.jsonl"},
                                                "retain": {"file": "x.jsonl"}})).rows("forget")
    with pytest.raises(GrunError, match="not defined under data.corpora"):
        make_source(source_cfg(folder, forget_corpora=["chem"]))
    with pytest.raises(GrunError, match="heldout"):
        make_source(source_cfg(folder, heldout=30)).rows("retain")
    with pytest.raises(GrunError, match="edit_fraction"):
        make_source(source_cfg(folder, edit_fraction=1.0))
    with pytest.raises(GrunError, match="does not exist"):
        make_source(source_cfg(tmp_path / "missing"))


def test_encode_for_unlearning_carries_corpus(tmp_path: Path) -> None:
    source = make_source(source_cfg(write_text_corpora(tmp_path)))
    row = source.rows("forget")[-1]
    feat = source.encode_for_unlearning(WordTokenizer(), PromptTemplate(), row, 512)
    assert feat["corpus_id"] == 1
    assert feat["labels"][: feat["prompt_len"]] == [IGNORE_INDEX] * feat["prompt_len"]


@pytest.mark.skipif(SHARED_DATA is None or not (SHARED_DATA / "wmdp").is_dir(),
                    reason="real WMDP corpora not found (set GRUN_DATA_DIR or ../shared/data/wmdp)")
def test_real_wmdp_corpora_load() -> None:
    from hydra import compose, initialize_config_dir

    from grun_cli.config import config_dir

    with initialize_config_dir(str(config_dir()), version_base=None):
        cfg = compose("unlearn", overrides=["data=wmdp"])
    source = make_source(cfg.data, data_root=str(SHARED_DATA))
    assert len(source.rows("forget")) == 1001 + 1000 - 200
    assert len(source.rows("retain_heldout")) == 100
    assert cfg.eval.kind == "lm_eval"  # data=wmdp brings its own evaluation
