"""Forget/retain pairing, IDK items and the collator's edit positions."""

from __future__ import annotations

from pathlib import Path

import pytest

from grun_cli.data.idk import BUILTIN_IDK, load_idk_answers
from grun_cli.data.unlearn import ForgetRetainDataset, UnlearnCollator
from grun_cli.errors import GrunError
from grun_cli.models.template import PromptTemplate


class CharTokenizer:
    """One token per character; bos 1, eos 2, pad 0."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [3 + (ord(c) % 200) for c in text]}


FORGET = [{"question": f"f{i}?", "answer": f"A{i}"} for i in range(6)]
RETAIN = [{"question": f"r{i}?", "answer": f"B{i}"} for i in range(50)]


def dataset(pairing: str, idk=None, seed: int = 0) -> ForgetRetainDataset:
    return ForgetRetainDataset(FORGET, RETAIN, CharTokenizer(), PromptTemplate(), 64,
                               pairing=pairing, seed=seed, idk_answers=idk)


def partners(ds: ForgetRetainDataset) -> list[list[int]]:
    return [ds[i]["retain"]["input_ids"] for i in range(len(ds))]


def test_fixed_pairing_repeats_every_epoch() -> None:
    ds = dataset("fixed")
    assert len(ds) == 6 and partners(ds) == partners(ds)
    assert partners(ds) == partners(dataset("fixed"))  # deterministic from the seed
    assert partners(ds) != partners(dataset("fixed", seed=1))


def test_random_pairing_draws_fresh_partners() -> None:
    ds = dataset("random")
    first, second = partners(ds), partners(ds)
    assert first != second
    assert first == partners(dataset("random"))  # still reproducible from the seed


def test_idk_items_keep_the_forget_question() -> None:
    ds = dataset("random", idk=["I don't know.", "No idea."])
    item = ds[2]
    t = PromptTemplate()
    prompt = t.prompt_ids(CharTokenizer(), "f2?")
    assert item["idk"]["input_ids"][: len(prompt)] == prompt
    answers = {tuple(ds[2]["idk"]["input_ids"][len(prompt):]) for _ in range(20)}
    assert len(answers) == 2  # a random refusal per fetch


def test_collator_positions_are_last_prompt_tokens() -> None:
    ds = dataset("fixed")
    batch = UnlearnCollator(pad_id=0)([ds[0], ds[1]])
    assert set(batch) == {"forget", "retain"}
    for key in batch:
        pos = batch[key]["positions"].tolist()
        labels = batch[key]["labels"].tolist()
        for row, p in enumerate(pos):
            assert labels[row][p] == -100 and labels[row][p + 1] != -100  # last prompt token


def test_errors() -> None:
    with pytest.raises(GrunError, match="pairing=often"):
        dataset("often")
    with pytest.raises(GrunError, match="needs forget and retain rows"):
        ForgetRetainDataset([], RETAIN, CharTokenizer(), PromptTemplate(), 64)


def test_idk_answer_sources(tmp_path: Path) -> None:
    assert load_idk_answers(None, None) == (BUILTIN_IDK, "built-in")
    (tmp_path / "tofu").mkdir()
    (tmp_path / "tofu" / "idontknow.jsonl").write_text("I'm not sure.\n\nNo clue.\n")
    answers, src = load_idk_answers(None, str(tmp_path))
    assert answers == ["I'm not sure.", "No clue."] and src.endswith("idontknow.jsonl")
    own = tmp_path / "mine.txt"
    own.write_text('"Quoted refusal."\nPlain refusal.\n')
    assert load_idk_answers(str(own), str(tmp_path))[0] == ["Quoted refusal.", "Plain refusal."]
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(GrunError, match="holds no answers"):
        load_idk_answers(str(tmp_path / "empty.txt"), None)


def test_spread_samples_evenly() -> None:
    from grun_cli.data.source import spread

    rows = [{"i": i} for i in range(10)]
    assert [r["i"] for r in spread(rows, 4)] == [0, 2, 5, 7]
    assert spread(rows, 0) == [] and spread(rows, 50) == rows
