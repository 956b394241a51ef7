"""Checkpoints and `resume=`: a run stopped by SIGTERM in the middle of training, then resumed,
ends with the same adapter bytes, metrics and training log (wall times aside) as a run that was
never stopped — for GRUN, LoRA and full fine-tuning, and for `grun finetune`. The uninterrupted
reference writes no periodic checkpoints, so this also shows checkpoints change nothing."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

import pytest

from conftest import GOOD_TARGET, SMALL_DATA, grun, grun_stopped

STEPS = 32  # a checkpoint at step 8 and the stop well before the end (24 steps of margin)
TIMES = ("wall_time_s", "eval_time_s", "reference_cache_s", "prefix_cache_s", "train_runtime", "train_samples_per_second", "train_steps_per_second")


def _digest(folder: Path) -> dict[str, str]:
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file()}


def _without_times(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.suffix == ".jsonl" \
        else [json.loads(path.read_text())]
    return [{k: v for k, v in r.items() if k not in TIMES} for r in rows]


def _stopped(args: list[str], run: Path, env: dict[str, str], command: str) -> subprocess.CompletedProcess[str]:
    """Start the run, SIGTERM it once its first periodic checkpoint exists (mid-training)."""
    return grun_stopped(command, *args, "train.save_steps=8", f"hydra.run.dir={run}",
                        ready=run / "trainer" / "checkpoint-8" / "grun_checkpoint.json", env=env)


UNLEARN = [*SMALL_DATA, GOOD_TARGET, "method=npo", "eval.enabled=false", "probe.max_rows=20",
           f"train.max_steps={STEPS}"]


@pytest.mark.parametrize("adapter", ["grun", "lora", "full"])
def test_a_resumed_unlearning_run_equals_an_uninterrupted_one(clean_env: dict[str, str], tmp_path: Path,
                                                               adapter: str) -> None:
    args = [*UNLEARN, f"adapter={adapter}"]
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    r = grun("unlearn", *args, "train.save_steps=0", f"hydra.run.dir={whole}", env=clean_env)
    assert r.returncode == 0, r.stderr[-3000:]

    r = _stopped(args, stopped, clean_env, "unlearn")
    assert r.returncode == 143, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    marker = (stopped / "INTERRUPTED").read_text()
    step = int(marker.split("at step ")[1].split(";")[0])
    assert 8 <= step < STEPS, marker
    assert f"continue it with: grun unlearn resume={stopped}" in r.stderr
    assert not (stopped / "run_card.json").exists() and not (stopped / "adapter").exists()

    r = grun("unlearn", f"resume={stopped}", env=clean_env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (stopped / "INTERRUPTED").exists() and not (stopped / "trainer").exists()
    assert _digest(stopped / "adapter") == _digest(whole / "adapter")
    for name in ("metrics.json", "train_log.jsonl"):
        assert _without_times(stopped / name) == _without_times(whole / name), name
    assert (stopped / "train_log.jsonl").read_text().count("\n") == (whole / "train_log.jsonl").read_text().count("\n")


def test_a_run_stopped_during_its_evaluation_resumes_without_training_again(clean_env: dict[str, str],
                                                                          tmp_path: Path) -> None:
    args = [*SMALL_DATA, GOOD_TARGET, "probe.max_rows=20", "train.max_steps=20", "train.save_steps=10",
            "eval.max_rows=20"]
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    r = grun("unlearn", *args, f"hydra.run.dir={whole}", env=clean_env)
    assert r.returncode == 0, r.stderr[-3000:]
    r = grun_stopped("unlearn", *args, f"hydra.run.dir={stopped}", env=clean_env,
                     ready=stopped / "adapter" / "grun_adapter.json")  # trained and saved: evaluating now
    assert r.returncode == 143 and (stopped / "trainer" / "checkpoint-20").is_dir()
    r = grun("unlearn", f"resume={stopped}", env=clean_env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _digest(stopped / "adapter") == _digest(whole / "adapter")
    for name in ("metrics.json", "train_log.jsonl"):  # no step trained twice, the same final log entry
        assert _without_times(stopped / name) == _without_times(whole / name), name


def test_a_resumed_finetune_equals_an_uninterrupted_one(clean_env: dict[str, str], tmp_path: Path) -> None:
    args = [*SMALL_DATA, f"train.max_steps={STEPS}", "check.max_rows=8", "extra_splits=[]"]
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    r = grun("finetune", *args, "train.save_steps=0", f"hydra.run.dir={whole}", env=clean_env)
    assert r.returncode == 0, r.stderr[-3000:]
    r = _stopped(args, stopped, clean_env, "finetune")
    assert r.returncode == 143 and "Traceback" not in r.stderr, r.stderr[-3000:]
    r = grun("finetune", f"resume={stopped}", env=clean_env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _digest(stopped / "checkpoint") == _digest(whole / "checkpoint")
    assert _without_times(stopped / "metrics.json") == _without_times(whole / "metrics.json")


def test_a_stopped_cached_target_build_continues_from_its_checkpoint(clean_env: dict[str, str], tmp_path: Path,
                                                                    cache_dir: Path) -> None:
    """A stop signal during the cached target's fine-tune (built on first use by `grun unlearn`)
    keeps the build's checkpoint; the same command again continues it to the weights an unbroken
    build reaches (at paper or SmolLM2 scale a target is minutes to hours of training)."""
    args = ["unlearn", *SMALL_DATA, "method=npo", "eval.enabled=false", "probe.max_rows=8", "train.max_steps=1",
            f'target.overrides=["train.max_steps={STEPS}","train.save_steps=8","extra_splits=[]","check.max_rows=0"]']
    (cache_dir / "tiny").mkdir(exist_ok=True)
    builds = {}
    for name in ("whole", "stopped"):  # each its own cache of fine-tunes, the tiny base model shared
        (tmp_path / name / "tiny").parent.mkdir(parents=True)
        (tmp_path / name / "tiny").symlink_to(cache_dir / "tiny")
        builds[name] = {**clean_env, "GRUN_CACHE_DIR": str(tmp_path / name)}
    r = grun(*args, f"hydra.run.dir={tmp_path / 'run-whole'}", env=builds["whole"])
    assert r.returncode == 0, r.stderr[-3000:]

    finetuned = tmp_path / "stopped" / "finetuned"
    r = grun_stopped(*args, f"hydra.run.dir={tmp_path / 'run-stopped'}", env=builds["stopped"],
                     ready=lambda: any(finetuned.glob(".*.building/trainer/checkpoint-8/grun_checkpoint.json")))
    assert r.returncode == 143 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "keeps its checkpoint at step" in r.stderr and "the same command continues" in r.stderr
    assert "resume=" not in r.stderr  # the run folder has nothing to resume: the cache has
    assert not [f for f in finetuned.iterdir() if not f.name.startswith(".")]  # nothing looks built

    r = grun(*args, f"hydra.run.dir={tmp_path / 'run-stopped'}", env=builds["stopped"])
    assert r.returncode == 0, r.stderr[-3000:]
    (whole,), (stopped,) = ([f for f in (tmp_path / n / "finetuned").iterdir() if not f.name.startswith(".")]
                            for n in ("whole", "stopped"))
    assert whole.name == stopped.name and not list(finetuned.glob(".*.building"))
    assert _digest(stopped / "checkpoint") == _digest(whole / "checkpoint")
    assert _without_times(stopped / "metrics.json") == _without_times(whole / "metrics.json")


def test_a_corrupted_checkpoint_is_refused_before_loading(clean_env: dict[str, str], tmp_path: Path) -> None:
    stopped = tmp_path / "stopped"
    r = _stopped([*UNLEARN, "adapter=grun", "train.max_steps=400"], stopped, clean_env, "unlearn")
    assert r.returncode == 143, r.stderr[-3000:]
    checkpoint = max((stopped / "trainer").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    weights = checkpoint / "trained.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    started = time.time()
    r = grun("unlearn", f"resume={stopped}", env=clean_env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert time.time() - started < 120  # fail-fast bound, generous for parallel test workers
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines == [f"grun unlearn: error: {weights} does not match its checksum in grun_checkpoint.json "
                     f"(truncated or changed); delete {checkpoint} to resume from an earlier checkpoint, or start "
                     "the run again"], r.stderr


def _fake_run(folder: Path, command: str = "unlearn") -> Path:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("- method=gd\n")
    (folder / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  job:\n    name: {command}\n")
    return folder


@pytest.mark.parametrize("case, fragment", [
    ("complete", "is a complete run (run_card.json); there is nothing to resume"),
    ("no-checkpoint", "holds no checkpoint (the run stopped before its first one; train.save_steps"),
    ("other-command", "is a grun finetune run; resume it with grun finetune resume="),
    ("bad-manifest", "grun_checkpoint.json is unreadable or incomplete"),
])
def test_folders_that_cannot_be_resumed(clean_env: dict[str, str], tmp_path: Path, case: str, fragment: str) -> None:
    run = _fake_run(tmp_path / "run", "finetune" if case == "other-command" else "unlearn")
    if case == "complete":
        (run / "run_card.json").write_text("{}")
    if case == "bad-manifest":
        (run / "trainer" / "checkpoint-3").mkdir(parents=True)
        (run / "trainer" / "checkpoint-3" / "grun_checkpoint.json").write_text('{"files": ')
    r = grun("unlearn", f"resume={run}", env=clean_env)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and fragment in lines[0], r.stderr[-2000:]
