"""adapter.gate_negatives: prompts read from named sets and files, one per item drawn from
the item's position alone (pairing, resume and shards unchanged), labelled 0 in the gate BCE,
and mistakes refused before anything loads."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from test_unlearn_data import FORGET, RETAIN, CharTokenizer

from grun_cli.data import QASource
from grun_cli.data.gate_negatives import conflicts, encode_negatives, read_prompts
from grun_cli.data.unlearn import ForgetRetainDataset, UnlearnCollator
from grun_cli.errors import GrunError
from grun_cli.models.template import PromptTemplate
from grun_cli.settings_check import SettingsError, check_settings

from conftest import new_adapter


class _QA:
    """A QA source's gate-negative encoding alone (no rows needed)."""

    gate_negative = QASource.gate_negative


def negatives(n: int = 5) -> list[dict]:
    return encode_negatives([f"general question {i}?" for i in range(n)], _QA(), CharTokenizer(), PromptTemplate(), 64)


def test_reading_files_and_encoding_prompts(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("What is water?\n\nWho wrote Hamlet?\n")
    (tmp_path / "b.jsonl").write_text('{"question": "How far is the moon?"}\n{"text": "Rivers flow."}\n')
    prompts = read_prompts([str(tmp_path / "a.txt"), str(tmp_path / "b.jsonl")], None)
    assert prompts == ["What is water?", "Who wrote Hamlet?", "How far is the moon?", "Rivers flow."]
    feats = encode_negatives(prompts + ["x" * 100], _QA(), CharTokenizer(), PromptTemplate(), 64)
    assert len(feats) == 4  # the over-long prompt is left out
    ids = PromptTemplate().prompt_ids(CharTokenizer(), "What is water?")
    assert feats[0] == {"input_ids": ids, "labels": [-100] * len(ids), "prompt_len": len(ids)}
    (tmp_path / "bad.jsonl").write_text('{"answer": "no question"}\n')
    with pytest.raises(GrunError, match="bad.jsonl:1 has no question or text field"):
        read_prompts([str(tmp_path / "bad.jsonl")], None)
    with pytest.raises(GrunError, match="neither a named set"):
        read_prompts([str(tmp_path / "missing.txt")], None)


def test_negatives_leave_the_pairing_alone_and_follow_the_position() -> None:
    plain = ForgetRetainDataset(FORGET, RETAIN, CharTokenizer(), PromptTemplate(), 64, seed=3)
    extra = ForgetRetainDataset(FORGET, RETAIN, CharTokenizer(), PromptTemplate(), 64, seed=3, negatives=negatives())
    a = [plain[i] for i in range(6) for _ in range(2)]
    b = [extra[i] for i in range(6) for _ in range(2)]
    assert [x["retain"] for x in a] == [x["retain"] for x in b] and "negative" not in a[0]
    picks = [x["negative"]["input_ids"] for x in b]
    assert len({tuple(p) for p in picks}) > 1  # varied
    resumed = ForgetRetainDataset(FORGET, RETAIN, CharTokenizer(), PromptTemplate(), 64, seed=3,
                                  negatives=negatives())
    resumed.fast_forward(7)
    assert [resumed[i]["negative"]["input_ids"] for i in (3, 4)] == picks[7:9]
    batch = UnlearnCollator(0)([b[0], b[1]])
    assert batch["negative"]["positions"].tolist() == [len(p) - 1 for p in picks[:2]]


def test_negative_gates_count_as_label_zero(tiny) -> None:
    adapter = new_adapter(copy.deepcopy(tiny.model), {"kind": "grun", "layers": [1], "rank": 2})
    calls = []

    def forward(inputs, role):
        calls.append(role)
        adapter.gate_records.append((role, torch.tensor([[0.4]])))

    adapter.gate_records = [("forget", torch.tensor([[0.8]])), ("retain", torch.tensor([[0.2]]))]
    out = adapter.aux_loss({"forget": {}, "retain": {}, "negative": {}}, forward)
    assert calls == ["negative"]
    bce = (-math.log(0.8) - math.log(0.8) - math.log(0.6)) / 3  # forget 1; retain and negative 0
    assert out["gate_bce"].item() == pytest.approx(bce, abs=1e-6)
    assert out["gate_retain"].item() == pytest.approx(0.2) and out["gate_negative"].item() == pytest.approx(0.4)


def test_mistakes_fail_in_settings(unlearn_composer, tmp_path: Path) -> None:
    cfg = unlearn_composer("adapter=grun", "adapter.gate_negatives=[nothing_here.txt]")
    with pytest.raises(SettingsError, match="nothing_here.txt is neither a named set"):
        check_settings(cfg, "unlearn")
    assert conflicts(["mmlu"], {"kind": "lm_eval", "tasks": ["wmdp_bio", "mmlu"]})[0].startswith(
        "adapter.gate_negatives=[mmlu]: the evaluation scores mmlu")
    assert conflicts(["mmlu"], {"kind": "tofu"}) == []
