"""The sweep's own start and end, as a Hydra callback so they run with any sweeper and
launcher: at the start (in the submitting process) the settings are checked, sweep.json is
written and the cached target / retain models and the target's evaluation are made ready, so
parallel trials never race to build them; at the end, trials.jsonl, best.json, the console
table and the W&B summary run."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from grun_cli.errors import GrunError
from grun_cli.io_utils import atomic_write_json
from grun_cli.sweep.export import write_selected
from grun_cli.sweep.optuna_study import prepare
from grun_cli.sweep.records import SWEEP_FILE, read_sweep, refresh_trials_file
from grun_cli.sweep.references import ensure_references, reference_metrics, wanted
from grun_cli.sweep.select import objectives
from grun_cli.sweep.summary import best, check_select, console_table, log_to_wandb, write_best

log = logging.getLogger("grun.sweep")


def _job_config(config: DictConfig) -> DictConfig:
    """The composed config without Hydra's own node (what a trial's task function sees)."""
    job = OmegaConf.create({k: config[k] for k in config if k != "hydra"})
    OmegaConf.set_struct(job, False)
    return job


def _fail(message: str) -> None:
    print(f"grun sweep: error: {message}", file=sys.stderr)
    raise SystemExit(2)


#: metrics a trial has without its final evaluation (the probe before / after, and gates)
_PROBE_PREFIXES = ("before_", "after_", "gate_", "trainable_", "train_", "wall_time")


def _check_metrics_exist(job: DictConfig, objective: dict[str, Any]) -> None:
    """An objective read from the evaluation needs the evaluation: refuse eval.enabled=false
    with one (every trial would fail after training)."""
    if job.eval.enabled:
        return
    for name, obj in objective.items():
        if not obj.metric.startswith(_PROBE_PREFIXES):
            raise GrunError(f"sweep.objective.{name} reads {obj.metric}, which only the evaluation measures; "
                            "drop eval.enabled=false, or read a probe metric such as after_forget_answer_prob")


def _check_sweeper(config: DictConfig, sweep_dir: Path) -> None:
    """grun's Optuna sweeper: its settings and search space, and that a study already in the
    sweep directory has the same space, before the references or any trial load a model."""
    sweeper = config.hydra.sweeper
    if not str(sweeper.get("_target_", "")).endswith("GrunOptunaSweeper"):
        return

    settings = OmegaConf.to_container(sweeper, resolve=True)
    params = settings.pop("params", None) or {}
    prepare(settings, params, list(config.hydra.overrides.task), config, sweep_dir)


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        job = _job_config(config)
        try:
            objective = objectives(job.sweep.objective)
            if set(objective) != {"forget", "utility"}:
                raise GrunError(f"sweep.objective has {sorted(objective)}; it needs exactly forget and utility")
            check_select(job.select)
            _check_metrics_exist(job, objective)
            _check_sweeper(config, sweep_dir)
            previous = read_sweep(sweep_dir)
            overrides = list(config.hydra.overrides.task)
            atomic_write_json(sweep_dir / SWEEP_FILE, {
                "argv": sys.argv[1:], "overrides": overrides,
                "objective": {k: vars(v) for k, v in objective.items()},
                "select": OmegaConf.to_container(job.select, resolve=True),
                "sweeper": OmegaConf.to_container(config.hydra.sweeper, resolve=False),
                "launcher": str(config.hydra.launcher.get("_target_")),
                "started": previous.get("started") or time.strftime("%Y-%m-%d %H:%M:%S"),
                "continued": [*previous.get("continued", []), time.strftime("%Y-%m-%d %H:%M:%S")] if previous else [],
            })
            if job.select.get("target") or wanted(job, str(config.hydra.launcher.get("_target_"))):
                ensure_references(job, sweep_dir)
        except GrunError as e:
            _fail(str(e))
        log.info("sweep directory: %s", sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        finish_sweep(Path(str(config.hydra.sweep.dir)), _job_config(config))


def write_selection(sweep_dir: Path, job: DictConfig, trials: list[dict[str, Any]],
                    finished: bool) -> tuple[dict[str, Any], Path]:
    """best.json from the trials so far, and selected/<cell>.yaml (the ready experiment
    configs); ``finished`` is false while the sweep still runs (each trial rewrites it), so a
    killed sweep's selection is there but says it is partial."""
    objective = objectives(job.sweep.objective)
    content = best(trials, objective, job.select, reference_metrics(Path(sweep_dir) / "references" / "target") or None)
    content["finished"] = finished
    path = write_best(sweep_dir, content)

    write_selected(sweep_dir, content, trials)
    return content, path


def finish_sweep(sweep_dir: Path, job: DictConfig, echo: bool = True) -> dict[str, Any]:
    """Rebuild trials.jsonl, write best.json (and the scatter), print the table, log to W&B."""
    trials = refresh_trials_file(sweep_dir)
    content, path = write_selection(sweep_dir, job, trials, finished=True)
    try:
        from grun_cli.report.plots import sweep_scatter  # optional: the report's figure

        sweep_scatter(sweep_dir, sweep_dir / "forget_quality_vs_utility.png")
    except Exception as e:  # a figure must never cost the sweep its records
        log.warning("sweep scatter plot not written: %s", e)
    if echo:
        print(console_table(trials, content))
        print(f"sweep directory: {sweep_dir}\nbest:            {path}")
    log_to_wandb(OmegaConf.to_container(job.logger, resolve=True), sweep_dir,
                 OmegaConf.to_container(job, resolve=True), trials, content)
    return content
