"""The real `grun` CLI end to end: help, config printing, clear errors, and fine-tuning runs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SHARED_DATA, grun

SMALL = [  # 2 forget authors + 1 retain author = 60 QA rows, a few seconds on 2 cores
    "data.num_authors=30", "data.subset.retain_authors=1", "extra_splits=[]", "logger=none",
]


def test_top_level_help(clean_env: dict[str, str]) -> None:
    r = grun("--help", env=clean_env)
    assert r.returncode == 0
    assert "finetune" in r.stdout and "e.g. grun finetune" in r.stdout
    r = grun("frobnicate", env=clean_env)
    assert r.returncode == 2 and "unknown command 'frobnicate'" in r.stderr and "finetune" in r.stderr


def test_command_help_and_cfg(clean_env: dict[str, str]) -> None:
    r = grun("finetune", "--help", env=clean_env)
    assert r.returncode == 0 and "grun finetune - fine-tune" in r.stdout
    assert "model: hf, llama3.1, llama3.1_instruct, mistral, smollm2, tiny" in r.stdout
    r = grun("finetune", "model=llama3.1", "data=tofu", "--cfg", "job", env=clean_env)
    assert r.returncode == 0 and "meta-llama/Llama-3.1-8B" in r.stdout and "lr: 1.0e-05" in r.stdout


def test_missing_data_folder_fails_and_leaves_no_result(clean_env: dict[str, str], tmp_path: Path) -> None:
    run = tmp_path / "run"
    r = grun("finetune", "data=tofu", f"data.local_dir={tmp_path / 'nowhere'}", "logger=none",
             f"hydra.run.dir={run}", env=clean_env)
    assert r.returncode == 2
    assert f"TOFU folder {tmp_path / 'nowhere'} (from data.local_dir) does not exist" in r.stderr
    assert "Traceback" not in r.stderr
    assert not run.exists()  # refused by the settings check, before Hydra made the run folder
    assert r.stderr.count("does not exist") == 1  # one message, not repeated by the logger


def test_nan_loss_stops_with_clear_error(clean_env: dict[str, str], tmp_path: Path) -> None:
    r = grun("finetune", *SMALL, "train.lr=1e30", "train.max_grad_norm=1e30", "train.max_steps=8",
             "train.logging_steps=1", "train.warmup=0", f"hydra.run.dir={tmp_path}", env=clean_env)
    assert r.returncode == 2 and "became nan at step" in r.stderr.lower()
    assert (tmp_path / "FAILED").is_file() and not (tmp_path / "run_card.json").exists()


def test_finetune_memorises_and_checkpoint_reloads(clean_env: dict[str, str], tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grun_cli.data import make_source
    from grun_cli.models.template import PromptTemplate
    from grun_cli.scoring.likelihood import answer_avg_loss

    r = grun("finetune", *SMALL, "train.max_steps=150", "check.max_rows=100",
             f"hydra.run.dir={tmp_path}", env=clean_env)
    assert r.returncode == 0, r.stderr[-3000:]
    card = json.loads((tmp_path / "run_card.json").read_text())
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert card["status"] == "complete" and card["metrics"] == metrics
    assert card["data"]["rows"] == 60 and card["data"]["authors"] == [0, 28, 29]
    assert card["config"]["train"]["lr"] == 3e-3 and card["versions"]["torch"]
    assert metrics["train_steps"] == 150 and metrics["check_rows"] == 60
    # memorised: the 60 training answers are near-certain and regenerated verbatim
    assert metrics["train_answer_prob"] > 0.9 and metrics["train_rouge_l_recall"] > 0.95
    assert metrics["train_loss_final"] < 0.3
    # the checkpoint is the trained model: reloading reproduces the reported probability
    ckpt = tmp_path / "checkpoint"
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(ckpt)
    src = make_source({"name": "synthetic", "seed": 0, "num_authors": 30, "qa_per_author": 20, "forget_split": "forget05",
                       "subset": {"retain_authors": 1}})
    rows = src.rows("full")
    losses = answer_avg_loss(model, tok, PromptTemplate(), [(x["question"], x["answer"]) for x in rows],
                             max_length=256)
    prob = sum(math.exp(-x) for x in losses) / len(losses)
    assert prob == pytest.approx(metrics["train_answer_prob"], abs=1e-4)
    assert f"checkpoint:    {ckpt}" in r.stdout


@pytest.mark.skipif(SHARED_DATA is None, reason="real TOFU copy not found (set GRUN_DATA_DIR or ../shared/data)")
def test_finetune_on_real_tofu_via_grun_data_dir(clean_env: dict[str, str], tmp_path: Path) -> None:
    env = {**clean_env, "GRUN_DATA_DIR": str(SHARED_DATA)}
    r = grun("finetune", "data=tofu", "data.forget_split=forget01", "data.subset.retain_authors=1",
             "split=retain", "extra_splits=[real_authors]", "logger=none", "train.max_steps=3",
             "check.max_rows=4", "check.max_new_tokens=8", f"hydra.run.dir={tmp_path}", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    card = json.loads((tmp_path / "run_card.json").read_text())
    assert card["data"]["source"] == f"TOFU ({SHARED_DATA / 'tofu'})"
    assert card["data"]["split"] == "retain99" and card["data"]["authors"] == [0]
    assert card["data"]["rows"] == 20 + 100
    assert (tmp_path / "checkpoint" / "config.json").is_file()


def test_wandb_offline_run_is_written(clean_env: dict[str, str], tmp_path: Path) -> None:
    env = {**clean_env, "WANDB_MODE": "offline"}
    env.pop("WANDB_API_KEY", None)
    r = grun("finetune", *SMALL[:-1], "logger=wandb", "train.max_steps=2", "check.max_rows=2",
             "check.max_new_tokens=4", "save_model=false", f"hydra.run.dir={tmp_path}", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
    assert not (tmp_path / "checkpoint").exists()


def test_multirun_sweeps_overrides(clean_env: dict[str, str], tmp_path: Path) -> None:
    r = grun("finetune", "--multirun", *SMALL, "train.max_steps=2", "train.lr=1e-3,2e-3",
             "check.max_rows=0", "save_model=false", f"hydra.sweep.dir={tmp_path}", env=clean_env)
    assert r.returncode == 0, r.stderr[-3000:]
    cards = sorted(tmp_path.glob("*/run_card.json"))
    assert len(cards) == 2
    assert sorted(json.loads(c.read_text())["config"]["train"]["lr"] for c in cards) == [1e-3, 2e-3]


def test_wandb_online_without_a_key_never_prompts(clean_env: dict[str, str], tmp_path: Path) -> None:
    """WANDB_MODE=online, no key, stdin a terminal-less pipe at end of input: W&B would prompt for
    a key and die; grun logs offline instead, with one warning, and the run completes."""
    env = {k: v for k, v in clean_env.items() if k != "WANDB_API_KEY"}
    env.update(WANDB_MODE="online", HOME=str(tmp_path), NETRC=str(tmp_path / "no-netrc"))
    exe = Path(sys.executable).with_name("grun")
    r = subprocess.run([str(exe), "finetune", *SMALL[:-1], "logger=wandb", "train.max_steps=2", "check.max_rows=2",
                        f"hydra.run.dir={tmp_path / 'run'}"], env=env, cwd=REPO, input="", capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "W&B mode online but no API key" in r.stderr and "Traceback" not in r.stderr
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))
