"""`grun unlearn` end to end through the real CLI on the tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import SMALL_DATA, grun

SMALL = [*SMALL_DATA, "probe.max_rows=8", "eval.enabled=false"]
QUICK_TARGET = 'target.overrides=["train.max_steps=5","extra_splits=[]","check.max_rows=0"]'


def test_every_method_runs_on_every_adapter(clean_env: dict[str, str], tmp_path: Path) -> None:
    r = grun("unlearn", "--multirun", "method=ga,gd,npo,simnpo,idk,idkdpo", "adapter=grun,lora,full",
             *SMALL, QUICK_TARGET, "train.max_steps=2", "train.batch_size=4", "train.grad_accum=1",
             "train.logging_steps=1", f"hydra.sweep.dir={tmp_path}", env=clean_env)
    assert r.returncode == 0, r.stderr[-4000:]
    cards = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*/run_card.json"))]
    assert sorted((c["method"], c["adapter_kind"]) for c in cards) == sorted(
        (m, a) for m in ("ga", "gd", "npo", "simnpo", "idk", "idkdpo") for a in ("grun", "lora", "full"))
    for card in cards:
        m = card["metrics"]
        assert m["train_steps"] == 2 and all(math.isfinite(v) for v in m.values() if isinstance(v, float))
        assert (Path(card["adapter"]) / "grun_adapter.json").is_file()
        assert 0 < m["trainable_percent"] <= 100
        if card["adapter_kind"] == "grun":  # tiny recipe: layers 2, 3; rank 4; the MLP gate
            d, r = 128, 4
            per_layer = d * r + (r * d + r) + (d * 256 + 256) + (256 * 64 + 64) + (64 + 1)
            assert m["trainable_parameters"] == 2 * per_layer and "gate_forget_layer3" in m
        log = [json.loads(x) for x in (Path(card["adapter"]).parent / "train_log.jsonl").read_text().splitlines()]
        assert any("forget_loss" in row for row in log)
        if card["method"] in ("idk", "idkdpo"):
            assert card["data"]["idk_answers"] == "built-in"


def test_grun_gd_forgets_and_keeps_retain(grun_gd_run) -> None:
    """Behaviour: on a memorised target, GRUN + GD cuts the forget answers' probability by
    more than 10x while the retain answers' probability moves by less than 0.05, and the
    gate fires on forget prompts and not on retain prompts."""
    from grun_cli.api import load_run

    tmp_path, r = grun_gd_run
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["before_forget_answer_prob"] > 0.9 and m["before_retain_answer_prob"] > 0.9
    assert m["after_forget_answer_prob"] < m["before_forget_answer_prob"] / 10
    assert abs(m["after_retain_answer_prob"] - m["before_retain_answer_prob"]) < 0.05
    assert m["gate_forget_mean"] > 0.8 and m["gate_retain_mean"] < 0.2 and m["gate_auc"] > 0.95
    assert "forget answer prob" in r.stdout and f"adapter:       {tmp_path / 'adapter'}" in r.stdout

    # the Python API reproduces the run's numbers with the edit on, and the target with it off
    run = load_run(tmp_path)
    card = json.loads((tmp_path / "run_card.json").read_text())
    from grun_cli.data import make_source

    src = make_source(card["config"]["data"])
    forget = [(x["question"], x["answer"]) for x in src.rows("forget")]
    after = run.answer_probability(forget)
    assert sum(after) / len(after) == pytest.approx(m["after_forget_answer_prob"], abs=1e-4)
    with run.disabled():
        before = run.answer_probability(forget)
        original = run.generate([forget[0][0]], max_new_tokens=40)[0]
    assert sum(before) / len(before) == pytest.approx(m["before_forget_answer_prob"], abs=1e-4)
    assert original == forget[0][1] and run.generate([forget[0][0]], max_new_tokens=40)[0] != original
    gates = run.gates([q for q, _ in forget])
    assert gates.shape == (len(forget), 2) and gates.mean().item() == pytest.approx(m["gate_forget_mean"], abs=1e-4)


def test_unlearn_bad_input(clean_env: dict[str, str], tmp_path: Path) -> None:
    r = grun("unlearn", *SMALL, QUICK_TARGET, "adapter.layers=[9]", f"hydra.run.dir={tmp_path / 'a'}",
             env=clean_env)
    assert r.returncode == 2 and "adapter.layers=[9]: block [9] outside the model's decoder blocks 0..3" in r.stderr
    assert not (tmp_path / "a").exists()  # refused before Hydra made the run folder
    r = grun("unlearn", *SMALL, QUICK_TARGET, "method=idk", f"method.idk_answers={tmp_path / 'none.txt'}",
             f"hydra.run.dir={tmp_path / 'b'}", env=clean_env)
    assert r.returncode == 2 and "none.txt does not exist" in r.stderr
    r = grun("unlearn", "method=rmu2", env=clean_env)
    assert r.returncode == 2 and "method=rmu2 is not a config option" in r.stderr
    r = grun("unlearn", "pairing=sometimes", *SMALL, QUICK_TARGET, f"hydra.run.dir={tmp_path / 'c'}", env=clean_env)
    assert r.returncode == 2 and "pairing=sometimes: input should be 'random' or 'fixed'" in r.stderr


def test_no_probe_rows_and_no_evaluation(clean_env: dict[str, str], tmp_path: Path) -> None:
    """probe.max_rows=0 with eval.enabled=false: nothing to report gates on, for any adapter."""
    for adapter in ("lora", "grun"):
        out = tmp_path / adapter
        r = grun("unlearn", *SMALL, QUICK_TARGET, f"adapter={adapter}", "probe.max_rows=0", "eval.enabled=false",
                 "train.max_steps=2", f"hydra.run.dir={out}", env=clean_env)
        assert r.returncode == 0, r.stderr[-3000:]
        assert (out / "run_card.json").is_file() and not (out / "GATES.json").exists()
