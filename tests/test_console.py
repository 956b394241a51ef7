"""The console stays quiet: the trainer's per-step dicts go to the run's log file (the
``grun.steps`` logger, which a run's job logging sends there), never to the terminal — also
where no job logging is configured, as when a sweep builds its target before the first trial."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from grun_cli.train.trainer import STEPS_LOG, QuietProgress

STATE = SimpleNamespace(is_world_process_zero=True, global_step=7)
LOGS = {"loss": 1.25, "grad_norm": 0.5, "gate_forget": 0.9, "gate_retain": 0.1, "total_flos": 3.0}


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_step_dicts_never_reach_the_terminal_without_a_run_log(capsys: pytest.CaptureFixture[str],
                                                                caplog: pytest.LogCaptureFixture) -> None:
    assert not STEPS_LOG.handlers
    with caplog.at_level(logging.INFO):
        QuietProgress().on_log(None, STATE, None, logs=LOGS)
    assert not [r for r in caplog.records if r.name == "grun.steps"]
    assert capsys.readouterr().err == ""


def test_step_dicts_go_to_the_run_log_when_it_exists() -> None:
    keep, level = _Keep(), STEPS_LOG.level
    STEPS_LOG.addHandler(keep)
    STEPS_LOG.setLevel(logging.INFO)  # as conf/hydra/default.yaml's job logging sets it
    try:
        QuietProgress().on_log(None, STATE, None, logs=LOGS)
    finally:
        STEPS_LOG.removeHandler(keep)
        STEPS_LOG.setLevel(level)
    assert len(keep.lines) == 1 and keep.lines[0].startswith("step 7 {'loss': 1.25")
    assert "total_flos" not in keep.lines[0]
