"""`grun sweep`: one trial of a hyperparameter search. Hydra's sweeper (grid, or grun's
Optuna sweeper) and launcher (sequential, joblib, submitit/Slurm) call this once per trial;
the sweep's start and end (references, trials.jsonl, best.json) are in
``grun_cli.sweep.callbacks``.

A trial is an ordinary `grun unlearn` run in its own numbered folder, plus ``trial.json``:
its hyperparameters, status (a failure is recorded with its reason, not raised, so the sweep
goes on), objectives and every metric. The return value is that record: the Optuna sweeper
reads the objectives from it.
"""

from __future__ import annotations

import logging
import math
import os
import time
import traceback
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from grun_cli.commands.context import run_dir
from grun_cli.errors import GrunError, first_line
from grun_cli.io_utils import atomic_write_text
from grun_cli.settings_check import read_settings
from grun_cli.sweep.records import read_sweep, refresh_trials_file, swept_params, write_trial
from grun_cli.sweep.select import objectives

log = logging.getLogger("grun.sweep")


def trial_threads(setting: Any, parallel: int) -> int | None:
    """torch threads for one trial: ``auto`` shares the cores among the trials that run at
    once (joblib's n_jobs), so two trials on two cores don't fight; None leaves torch's default."""
    if setting in (None, "", "auto"):
        if parallel <= 1:
            return None
        return max(1, (os.cpu_count() or 1) // parallel)
    try:
        n = int(setting)
    except (TypeError, ValueError):
        raise GrunError(f"sweep.threads={setting}: give a positive number of threads, or auto") from None
    if n < 1:
        raise GrunError(f"sweep.threads={setting}: give a positive number of threads, or auto")
    return n


def _parallel_jobs(hydra_cfg: Any) -> int:
    n = (hydra_cfg.launcher or {}).get("n_jobs") if "launcher" in hydra_cfg else None
    try:
        n = int(n) if n is not None else 1
    except (TypeError, ValueError):
        return 1
    return (os.cpu_count() or 1) if n < 0 else max(1, n)


def trial(cfg: DictConfig) -> dict[str, Any]:
    """Run one trial; never raises for a failed run (only for Ctrl-C)."""
    from hydra.core.hydra_config import HydraConfig

    from grun_cli.unlearning.run import run_unlearn

    hydra_cfg = HydraConfig.get()
    out = run_dir()
    sweep_dir = Path(hydra_cfg.sweep.dir)
    base = read_sweep(sweep_dir).get("overrides", [])
    overrides = list(hydra_cfg.overrides.task)
    record: dict[str, Any] = {
        "number": int(hydra_cfg.job.num), "run_dir": os.path.relpath(out, sweep_dir),
        "params": swept_params(overrides, base), "overrides": overrides,
        "method": str(cfg.method.name), "adapter": str(cfg.adapter.kind),
        "status": "failed", "reason": None, "objectives": {}, "metrics": {},
    }
    started = time.time()
    threads = trial_threads(cfg.sweep.get("threads"), _parallel_jobs(hydra_cfg))
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    record["threads"] = threads
    with open_dict(cfg):  # one W&B group per sweep, one run per trial
        cfg.logger.group = cfg.logger.get("group") or f"sweep-{sweep_dir.name}"
        cfg.logger.job_type = "trial"
    log.info("trial %d: %s", record["number"], " ".join(f"{k}={v}" for k, v in record["params"].items()) or "(no params)")
    try:
        metrics = run_unlearn(cfg, read_settings(cfg, "unlearn"), out)  # (checked before the first trial)
        record["metrics"] = metrics
        record["objectives"] = {name: obj.value(metrics) for name, obj in objectives(cfg.sweep.objective).items()}
        bad = [cfg.sweep.objective[n].metric for n, v in record["objectives"].items() if not math.isfinite(v)]
        if bad:
            record["reason"] = f"{', '.join(bad)} is not a finite number ({[metrics.get(b) for b in bad]})"
        else:
            record["status"] = "complete"
    except KeyboardInterrupt:
        record.update(status="interrupted", reason="interrupted (Ctrl-C)")
        _finish(record, out, sweep_dir, started, cfg)
        raise
    except GrunError as e:
        record["reason"] = str(e)
    except Exception as e:  # a trial's crash is the sweep's data, not its end
        record["reason"] = f"{type(e).__name__}: {first_line(e)}"
        log.error("trial %d failed:\n%s", record["number"], traceback.format_exc())
    _finish(record, out, sweep_dir, started, cfg)
    return record


def _finish(record: dict[str, Any], out: Path, sweep_dir: Path, started: float, cfg: DictConfig) -> None:
    record["wall_time_s"] = round(time.time() - started, 1)
    if record["status"] != "complete":
        atomic_write_text(out / ("INTERRUPTED" if record["status"] == "interrupted" else "FAILED"),
                          f"{record['status']}: {record['reason']}\n")
        log.warning("trial %d %s: %s", record["number"], record["status"], record["reason"])
    else:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in record["objectives"].items())
        log.info("trial %d complete: %s (%.0f s)", record["number"], shown, record["wall_time_s"])
    write_trial(out, record)
    trials = refresh_trials_file(sweep_dir)
    try:  # a sweep killed later still has its selection so far (finished: false until the end)
        from grun_cli.sweep.callbacks import write_selection

        write_selection(sweep_dir, cfg, trials, finished=False)
    except Exception as e:
        log.warning("best.json not refreshed: %s", e)
