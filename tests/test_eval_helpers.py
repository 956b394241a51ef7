"""Likelihood and ROUGE helpers against hand-computed values; batching must not change results."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from grun_cli.config import config_dir
from grun_cli.data.synthetic import generate
from grun_cli.logprobs import sequence_nll, token_mean_nll
from grun_cli.models.loading import load_model
from grun_cli.models.template import IGNORE_INDEX, PromptTemplate
from grun_cli.scoring.likelihood import answer_avg_loss, pad_batch
from grun_cli.scoring.rouge import rouge_l_recall


def test_sequence_nll_golden() -> None:
    # position 0 predicts label 1 from logits [0, 0]: -ln(1/2); position 1 predicts label 0
    # from logits [ln 3, 0]: -ln(3/4). The last position predicts nothing.
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [5.0, -5.0]]])
    labels = torch.tensor([[IGNORE_INDEX, 1, 0]])
    total, count = sequence_nll(logits, labels)
    assert count.tolist() == [2]
    assert total.item() == pytest.approx(math.log(2) - math.log(0.75), abs=1e-6)
    assert token_mean_nll(logits, labels).item() == pytest.approx((math.log(2) - math.log(0.75)) / 2, abs=1e-6)


def test_rouge_l_recall_golden() -> None:
    got = rouge_l_recall(["the cat sat", "cats running", "", "Lyon, France."],
                         ["the cat sat on the mat", "cat runs", "anything", "He lives in Lyon"])
    assert got == pytest.approx([3 / 6, 1.0, 0.0, 1 / 4])


def test_pad_batch() -> None:
    b = pad_batch([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [5], "labels": [5]}], pad_id=0)
    assert b["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert b["labels"].tolist() == [[-100, 6, 7], [5, -100, -100]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_answer_loss_is_batch_invariant_and_matches_direct_forward(tmp_path: Path) -> None:
    rows = generate(num_authors=30)["full"][:5]
    corpus = [t for r in generate(num_authors=30)["full"] for t in (r["question"], r["answer"])]
    lm = load_model(OmegaConf.load(config_dir() / "model" / "tiny.yaml"), lambda: corpus, str(tmp_path))
    t = PromptTemplate()
    pairs = [(r["question"], r["answer"]) for r in rows]
    one = answer_avg_loss(lm.model, lm.tokenizer, t, pairs, max_length=256, batch_size=1)
    many = answer_avg_loss(lm.model, lm.tokenizer, t, pairs, max_length=256, batch_size=5)
    assert many == pytest.approx(one, abs=1e-5)
    enc = t.encode(lm.tokenizer, *pairs[2], max_length=256)
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(torch.tensor([enc["input_ids"]])).logits[0], -1)
    p = enc["prompt_len"]
    direct = -sum(logp[i - 1, enc["input_ids"][i]].item() for i in range(p, len(enc["input_ids"])))
    assert one[2] == pytest.approx(direct / (len(enc["input_ids"]) - p), abs=1e-5)
