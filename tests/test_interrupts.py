"""SIGTERM (what job schedulers send) and SIGINT (Ctrl-C) in the middle of training: one line on
stderr, no traceback, exit status 143 / 130, and a folder marked INTERRUPTED that never looks
complete."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import GOOD_TARGET, REPO, SMALL_DATA


def _wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 400) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.is_file() and text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.stderr.read()[-3000:]}")
        time.sleep(0.5)
    raise AssertionError(f"no '{text}' in {path} after {timeout} s")


def _training(run: Path, env: dict[str, str]) -> subprocess.Popen:
    """A long `grun unlearn`, returned once its training loop has started."""
    exe = Path(sys.executable).with_name("grun")
    proc = subprocess.Popen([str(exe), "unlearn", *SMALL_DATA, GOOD_TARGET, "train.max_steps=100000",
                             f"hydra.run.dir={run}"], env=env, cwd=REPO, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for(run / "unlearn.log", "trainable parameters", proc)
    return proc


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_training_marks_the_run_interrupted(clean_env: dict[str, str], tmp_path: Path,
                                                         sig: signal.Signals, status: int) -> None:
    run = tmp_path / "run"
    proc = _training(run, clean_env)
    try:
        time.sleep(2)  # inside the training loop
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    name = signal.Signals(sig).name
    assert proc.returncode == status, err[-3000:]
    assert "Traceback" not in err
    lines = [ln.strip() for ln in err.splitlines() if "grun unlearn:" in ln]
    assert len(lines) == 1, err[-2000:]
    step = int(lines[0].split(" at step ")[1].split(";")[0])  # the step being trained finished first
    checkpoint = run / "trainer" / f"checkpoint-{step}"
    assert lines[0] == (f"grun unlearn: interrupted by {name} at step {step}; {run} is marked INTERRUPTED "
                        f"(not a result); continue it with: grun unlearn resume={run}"), err[-2000:]
    assert f"grun: {name} received: finishing the current step and saving a checkpoint" in err
    assert (run / "INTERRUPTED").read_text().strip() == f"interrupted by {name} at step {step}; checkpoint {checkpoint}"
    assert (checkpoint / "grun_checkpoint.json").is_file()
    assert not (run / "run_card.json").exists() and not (run / "FAILED").exists()


def test_a_second_signal_stops_at_once(clean_env: dict[str, str], tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _training(run, clean_env)
    try:
        time.sleep(2)
        proc.send_signal(signal.SIGINT)  # two different signals: the kernel never merges them
        proc.send_signal(signal.SIGTERM)  # before the step could finish: no checkpoint, no wait
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143 and "Traceback" not in err, err[-2000:]
    assert (run / "INTERRUPTED").read_text().strip() == "interrupted by SIGTERM"
