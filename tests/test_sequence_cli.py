"""`grun unlearn sequence=...` through the real CLI on the tiny model: three forget requests
for GRUN (evaluated after each, reloaded bit for bit by `grun eval run=`, plotted by
`grun report`), LoRA and full fine-tuning (probe only). Three stacked edits and the combination
arithmetic: tests/test_grun_stack.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import GOOD_TARGET, SMALL_DATA, grun

pytestmark = pytest.mark.slow

# forget01 then the rest of forget05 (one author each on 30 synthetic authors): the same target
# and retain model as the other end-to-end tests (SMALL_DATA's forget05 subset), built once.
SEQUENCE = ["sequence.requests=[forget01,forget05]", *SMALL_DATA, GOOD_TARGET, "train.max_steps=6",
            "probe.max_rows=20"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "GRUN_DATA_DIR"}
    env.update(GRUN_CACHE_DIR=str(cache_dir), WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false")
    return env


def lines(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "sequence.jsonl").read_text().splitlines()]


def test_a_grun_sequence_evaluates_each_request_and_reloads_exactly(tmp_path: Path, env: dict[str, str]) -> None:
    run = tmp_path / "seq"
    r = grun("unlearn", "method=gd", "adapter=grun", *SEQUENCE, "eval.max_rows=30", f"hydra.run.dir={run}", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    found = lines(run)
    assert [x["request"]["request"] for x in found] == [1, 2]
    authors = [set(x["request"]["authors"]) for x in found]
    assert all(len(a) == 1 for a in authors) and len(set.union(*authors)) == 2
    for k, line in enumerate(found, start=1):
        m = line["metrics"]
        assert all(f"request_{j}_forget_Q_A_Prob" in m for j in range(1, k + 1))
        assert f"request_{k + 1}_forget_Q_A_Prob" not in m
        assert {"forgotten_forget_quality", "model_utility", "forget_quality"} <= set(m)
        assert line["request"]["retain_rows"] == 20 * (3 + 2 - k)  # 3 kept others + authors not forgotten yet
        assert (run / "requests" / f"{k:02d}" / "TOFU_EVAL.json").is_file()
        assert f"request {k} ({['forget01', 'forget05'][k - 1]})" in r.stdout
    saved = json.loads((run / "adapter" / "grun_adapter.json").read_text())["config"]
    assert [s["request"] for s in saved["stack"]] == [1] and saved["request"]["request"] == 2
    assert saved["stack"][0]["authors"] == found[0]["request"]["authors"]
    card = json.loads((run / "run_card.json").read_text())
    assert card["status"] == "complete" and card["data"]["forget_split"] == "forget05"

    again = tmp_path / "eval"
    e = grun("eval", f"run={run}", "eval.max_rows=30", "logger=none", f"hydra.run.dir={again}", env=env)
    assert e.returncode == 0, e.stderr[-3000:]
    last = json.loads((run / "requests" / "02" / "TOFU_EVAL.json").read_text())
    reloaded = json.loads((again / "TOFU_EVAL.json").read_text())
    for key in ("forget_Q_A_Prob", "retain_Q_A_Prob", "forget_truth_ratio", "ra_Q_A_Prob_normalised"):
        assert reloaded[key]["value_by_index"] == last[key]["value_by_index"], key
    evaluated = json.loads((again / "metrics.json").read_text())  # per request again, from the card
    for key in ("request_1_forget_Q_A_Prob", "request_2_forget_quality", "forgotten_forget_Q_A_ROUGE"):
        assert evaluated[key] == found[-1]["metrics"][key], key

    rep = grun("report", f"runs=[{run}]", f"out={tmp_path / 'report'}", env=env)
    assert rep.returncode == 0, rep.stderr[-3000:]
    assert (tmp_path / "report" / "sequence.png").stat().st_size > 10_000


@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_lora_and_full_sequences_train_on(tmp_path: Path, env: dict[str, str], adapter: str) -> None:
    run = tmp_path / adapter
    r = grun("unlearn", "method=npo", f"adapter={adapter}", *SEQUENCE, "eval.enabled=false",
             f"hydra.run.dir={run}", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    found = lines(run)
    assert [x["request"]["request"] for x in found] == [1, 2]
    assert {"request_1_forget_answer_prob", "forgotten_forget_answer_prob", "retain_answer_prob"} <= set(
        found[-1]["metrics"])
    assert json.loads((run / "adapter" / "grun_adapter.json").read_text())["kind"] == adapter
