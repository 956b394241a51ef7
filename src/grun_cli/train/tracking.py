"""Experiment tracking: W&B online with a key, offline without one, never fatal."""

from __future__ import annotations

import contextlib
import logging
import netrc
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class Tracker:
    """A thin, failure-proof wrapper around one W&B run (or nothing)."""

    def __init__(self, run: Any = None) -> None:
        self.run = run

    @property
    def report_to(self) -> list[str]:
        """The HF Trainer's report_to: it reuses the run started here."""
        return ["wandb"] if self.run is not None else []

    def summary(self, values: Mapping[str, Any]) -> None:
        if self.run is None:
            return
        try:
            self.run.summary.update(dict(values))
        except Exception as e:  # tracking must never break a run
            log.warning("W&B summary update failed: %s", e)

    def log(self, values: Mapping[str, Any], axis: str | None = None) -> None:
        """One row of a series (W&B's own step counter; ``axis`` names the metric to plot the
        row's other values against, e.g. the request number of a sequence)."""
        if self.run is None:
            return
        try:
            if axis is not None:
                self.run.define_metric(axis)
                for key in values:
                    if key != axis:
                        self.run.define_metric(key, step_metric=axis)
            self.run.log(dict(values))
        except Exception as e:
            log.warning("W&B log failed: %s", e)

    def image(self, name: str, path: Path) -> None:
        if self.run is None or not Path(path).is_file():
            return
        try:
            import wandb

            self.run.log({name: wandb.Image(str(path))})
        except Exception as e:
            log.warning("W&B image %s failed: %s", name, e)

    def table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        if self.run is None or not rows:
            return
        try:
            import wandb

            self.run.log({name: wandb.Table(columns=columns, data=rows)})
        except Exception as e:
            log.warning("W&B table %s failed: %s", name, e)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is None:
            return
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as e:
            log.warning("W&B finish failed: %s", e)
        self.run = None


def start_tracking(
    logger_cfg: Mapping[str, Any], run_dir: Path, config: Mapping[str, Any], job_type: str, name: str
) -> Tracker:
    """Start a W&B run per ``logger`` config; on any failure log one warning and go on without."""
    if logger_cfg.get("backend") != "wandb":
        return Tracker()  # report_to=[]: the HF Trainer starts no W&B run either
    mode = str(logger_cfg.get("mode") or "auto")
    if mode == "disabled":
        return Tracker()
    if mode == "auto":
        mode = "online" if _has_wandb_key() else "offline"
    elif mode == "online" and not _has_wandb_key():
        # W&B would ask for a key at an interactive prompt (and die at end of input): never block
        log.warning("W&B mode online but no API key (WANDB_API_KEY or ~/.netrc): logging offline instead; "
                    "upload later with `wandb sync %s`", run_dir / "wandb")
        mode = "offline"
    try:
        import wandb
    except ImportError:
        log.warning("wandb is not installed; continuing without tracking")
        return Tracker()
    kwargs = dict(
        project=logger_cfg.get("project") or "grun",
        entity=logger_cfg.get("entity"),
        group=logger_cfg.get("group"),
        tags=list(logger_cfg.get("tags") or []),
        name=name,
        job_type=logger_cfg.get("job_type") or job_type,  # a sweep's trials say job_type=trial
        dir=str(run_dir),
        config=dict(config),
    )
    for attempt in ([mode, "offline"] if mode == "online" else [mode]):
        try:
            run = wandb.init(mode=attempt, settings=wandb.Settings(init_timeout=60, silent=True), **kwargs)
            log.info("W&B run (%s) in %s", attempt, run_dir / "wandb")
            return Tracker(run)
        except Exception as e:
            log.warning("W&B %s start failed (%s)%s", attempt, e,
                        "; retrying offline" if attempt == "online" else "; continuing without it")
    return Tracker()


@contextlib.contextmanager
def tracked(tracker: Any) -> Iterator[Any]:
    """The tracker finished as the run ended: with exit code 1 when anything (an error, Ctrl-C)
    ends the block, so a failed run never looks finished in W&B either."""
    try:
        yield tracker
    except BaseException:
        tracker.finish(exit_code=1)
        raise
    tracker.finish()
