"""End to end on the tiny model: `grun eval eval=wmdp` (a base model and a GRUN run, offline,
batched), `grun unlearn data=wmdp method=rmu` with adapter=grun and adapter=full, and the plain
`lm-eval` command with --model grun."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GOOD_TARGET, SMALL_DATA, grun, mcq_overrides, write_mcq, write_text_corpora

pytestmark = pytest.mark.slow
TASKS = ("wmdp_bio", "wmdp_cyber", "mmlu")


def check_lm_eval_metrics(metrics: dict) -> None:
    for task in TASKS:
        assert 0.0 <= metrics[f"{task}_acc"] <= 1.0
        assert metrics[f"{task}_n"] == 8
        assert metrics[f"{task}_acc_stderr"] > 0
    assert metrics["lm_eval_batch_size"] == 4
    assert metrics["lm_eval_questions_per_s"] > 0


def test_eval_wmdp_base_model(tmp_path: Path, clean_env) -> None:
    out = tmp_path / "run"
    r = grun("eval", "eval=wmdp", *SMALL_DATA, GOOD_TARGET, *mcq_overrides(tmp_path),
             f"hydra.run.dir={out}", env=clean_env)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    check_lm_eval_metrics(metrics)
    assert "forget_text_nll" not in metrics  # QA data: no text corpora to score
    assert json.loads((out / "run_card.json").read_text())["evaluation"] == "lm_eval"
    assert "wmdp_bio_local" in json.loads((out / "LM_EVAL.json").read_text())["results"]
    assert "wmdp_bio" in r.stdout and "questions/s" in r.stdout


def test_eval_wmdp_of_a_grun_run(grun_gd_run, tmp_path: Path, clean_env) -> None:
    run, _ = grun_gd_run
    out = tmp_path / "eval"
    env = {**clean_env, "WANDB_MODE": "offline"}
    env.pop("WANDB_API_KEY", None)
    r = grun("eval", f"run={run}", "eval=wmdp", "logger=wandb", *mcq_overrides(tmp_path), f"hydra.run.dir={out}",
             env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    check_lm_eval_metrics(metrics)
    assert json.loads((out / "run_card.json").read_text())["model"]["adapter"] == "grun"
    (wandb_run,) = (out / "wandb").glob("offline-run-*")  # per-task results reach W&B
    (table,) = wandb_run.glob("files/media/table/lm_eval_*.table.json")
    rows = {row[0]: row for row in json.loads(table.read_text())["data"]}
    assert set(rows) == set(TASKS) and rows["mmlu"][1] == pytest.approx(metrics["mmlu_acc"]) and rows["mmlu"][3] == 8


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_text_corpora(tmp_path_factory.mktemp("corpora"))


def wmdp_args(corpora: Path, tmp_path: Path) -> list[str]:
    return ["data=wmdp", f"data.local_dir={corpora}", "data.heldout=5", "logger=none", "eval.limit=8",
            'target.overrides=["train.max_steps=40"]', *mcq_overrides(tmp_path)]


@pytest.mark.parametrize("adapter", ["grun", "full"])
def test_unlearn_wmdp_rmu(adapter: str, corpora: Path, tmp_path: Path, clean_env) -> None:
    """Both adapters end to end; the GRUN run is then evaluated again with `grun eval run=`,
    which takes the run's data set's evaluation (lm-eval) with the command line's eval.* keys."""
    out = tmp_path / "run"
    r = grun("unlearn", "method=rmu", f"adapter={adapter}", *wmdp_args(corpora, tmp_path), "train.max_steps=8",
             f"hydra.run.dir={out}", env=clean_env)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("forget", "retain"):
        for when in ("before", "after"):
            assert metrics[f"{when}_{name}_text_nll"] > 0
    assert "forget_text_nll" not in metrics  # measured once (after_*), not again by the evaluation
    assert metrics["after_forget_text_nll"] != metrics["before_forget_text_nll"]
    check_lm_eval_metrics(metrics)
    card = json.loads((out / "run_card.json").read_text())
    assert card["method"] == "rmu" and card["status"] == "complete"
    if adapter == "grun":
        assert card["config"]["adapter"]["gate"] == "mlp" and card["config"]["adapter"]["gate_weight"] == 100.0
        assert card["config"]["method"]["positions"] == "all"  # model.rmu.grun_positions of tiny
        assert 0.0 <= metrics["gate_forget_mean"] <= 1.0 and "gate_auc" in metrics
        data = tmp_path / "data"  # local question files where GRUN_DATA_DIR points
        for name in ("wmdp/bio_test.jsonl", "wmdp/cyber_test.jsonl", "mmlu/mmlu_sample500.jsonl"):
            (data / name).parent.mkdir(parents=True, exist_ok=True)
            write_mcq(data / name, n=6)
        again = tmp_path / "again"
        r = grun("eval", f"run={out}", "eval.batch_size=3", "logger=none", f"hydra.run.dir={again}",
                 "eval.attacks=[edit_off,quantize_4bit,relearn]", "eval.attack_settings.relearn.steps=4",
                 env={**clean_env, "GRUN_DATA_DIR": str(data)})
        assert r.returncode == 0, r.stderr[-3000:]
        redo = json.loads((again / "metrics.json").read_text())
        # attacks on lm-eval: the held-out NLL, the accuracies and the gate again under each
        assert redo["edit_off_forget_text_nll"] == pytest.approx(metrics["before_forget_text_nll"], rel=1e-4)
        assert redo["relearn_forget_text_nll"] < redo["forget_text_nll"]
        assert redo["quantize_4bit_forget_text_nll"] != redo["forget_text_nll"]
        assert "quantize_4bit_gate_forget_mean" in redo and "edit_off_gate_forget_mean" not in redo
        for attack in ("edit_off", "quantize_4bit", "relearn"):
            assert 0 <= redo[f"{attack}_wmdp_bio_acc"] <= 1 and (again / "attacks" / attack / "LM_EVAL.json").is_file()
        assert "under attack" in r.stdout
        assert redo["lm_eval_batch_size"] == 3 and redo["wmdp_cyber_n"] == 6
        assert redo["forget_text_nll"] == pytest.approx(metrics["after_forget_text_nll"], rel=1e-4)
        assert redo["gate_forget_mean"] == pytest.approx(metrics["gate_forget_mean"], rel=1e-4)
    else:  # the WMDP recipe: only the MLP down-projections of blocks 0 and 1 (tiny) train
        assert metrics["trainable_parameters"] == 2 * 128 * 352
        assert card["config"]["method"]["positions"] == "all"
        assert card["config"]["train"]["batch_size"] == 4


def test_unlearn_wmdp_npo_and_idk_refused(corpora: Path, tmp_path: Path, clean_env) -> None:
    out = tmp_path / "npo"
    r = grun("unlearn", "method=npo", *wmdp_args(corpora, tmp_path), "train.max_steps=3", "eval.enabled=false",
             f"hydra.run.dir={out}", env=clean_env)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["after_forget_text_nll"] > 0 and "gate_forget_mean" in metrics
    r = grun("unlearn", "method=idk", *wmdp_args(corpora, tmp_path), f"hydra.run.dir={tmp_path / 'idk'}",
             env=clean_env)
    assert r.returncode == 2 and "needs QA data" in r.stderr
    assert not (tmp_path / "idk" / "run_card.json").exists()


def test_plain_lm_eval_command_knows_grun(grun_gd_run, tmp_path: Path, clean_env) -> None:
    from grun_cli.eval.lm_eval_run import TASK_DIR

    run, _ = grun_gd_run
    data = write_mcq(tmp_path / "mcq.jsonl")
    exe = Path(sys.executable).with_name("lm-eval")
    r = subprocess.run([str(exe), "run", "--model", "grun", "--model_args", f"run={run}", "--tasks", "wmdp_bio_local",
                        "--include_path", str(TASK_DIR), "--metadata", json.dumps({"data_file": str(data)}),
                        "--batch_size", "4", "--output_path", str(tmp_path / "out")],
                       env=clean_env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "wmdp_bio_local" in r.stdout and "acc" in r.stdout


def test_bad_evaluation_fails_before_training(corpora: Path, tmp_path: Path, clean_env) -> None:
    out = tmp_path / "bad"
    r = grun("unlearn", "method=rmu", *wmdp_args(corpora, tmp_path), "eval.tasks=[no_such_task_xyz]",
             f"hydra.run.dir={out}", env=clean_env)
    assert r.returncode == 2 and "unknown lm-eval task" in r.stderr and "no_such_task_xyz" in r.stderr
    assert not (out / "adapter").exists() and (out / "FAILED").exists()
    r = grun("unlearn", "method=rmu", "data=wmdp", f"data.local_dir={corpora}", "logger=none", "eval=tofu",
             f"hydra.run.dir={tmp_path / 't'}", env=clean_env)
    assert r.returncode == 2 and "eval=tofu needs QA data" in r.stderr


def test_forget_corpora_as_a_sequence_of_requests(corpora: Path, tmp_path: Path, clean_env) -> None:
    """data=wmdp, sequence=wmdp_bio_then_cyber: one GRUN edit per corpus, the held-out NLL of
    each request's corpus after each, reported again by `grun eval run=`; a corpus that is not a
    forget corpus is refused before anything loads."""
    out = tmp_path / "seq"
    args = ["method=npo", "adapter=grun", *wmdp_args(corpora, tmp_path), "train.max_steps=3"]
    r = grun("unlearn", *args, "sequence=wmdp_bio_then_cyber", "eval.enabled=false", f"hydra.run.dir={out}",
             env=clean_env)
    assert r.returncode == 0, r.stderr[-3000:]
    found = [json.loads(x) for x in (out / "sequence.jsonl").read_text().splitlines()]
    assert [x["request"]["corpora"] for x in found] == [["bio"], ["cyber"]]
    assert [x["request"]["forget_rows"] for x in found] == [25, 25]  # 30 texts, 5 held out
    first, last = found[0]["metrics"], found[1]["metrics"]
    assert "request_2_forget_text_nll" not in first and first["request_1_forget_text_nll"] > 0
    assert last["forgotten_forget_text_nll"] > 0 and last["retain_text_nll"] > 0
    assert "request 2 (cyber): held-out NLL of its corpus" in r.stdout
    saved = json.loads((out / "adapter" / "grun_adapter.json").read_text())["config"]
    assert saved["stack"][0]["corpora"] == ["bio"] and saved["request"]["corpora"] == ["cyber"]

    again = tmp_path / "again"
    e = grun("eval", f"run={out}", "eval=wmdp", "eval.limit=8", *mcq_overrides(tmp_path), "logger=none",
             f"hydra.run.dir={again}", env=clean_env)
    assert e.returncode == 0, e.stderr[-3000:]
    redo = json.loads((again / "metrics.json").read_text())
    for key in ("request_1_forget_text_nll", "request_2_forget_text_nll", "forgotten_forget_text_nll"):
        assert redo[key] == pytest.approx(last[key], rel=1e-4), key

    bad = grun("unlearn", *args, "sequence.requests=[bio,chem]", f"hydra.run.dir={tmp_path / 'bad'}", env=clean_env)
    assert bad.returncode == 2 and "chem is not one of data.forget_corpora" in bad.stderr, bad.stderr[-2000:]
