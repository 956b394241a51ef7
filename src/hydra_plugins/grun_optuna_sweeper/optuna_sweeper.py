"""A Hydra sweeper that asks Optuna for trials and tells it their objectives.

Why not hydra-optuna-sweeper 1.3.0: its metadata pins optuna<3, its distributions are the
ones Optuna deprecated in 3.0, and its persistence doesn't continue a sweep: job numbers
restart at 0 (a continued sweep overwrites finished trials' folders), ``n_trials`` counts new
trials instead of a total, and trials killed mid-run stay RUNNING in the study forever.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("grun.sweep")


class GrunOptunaSweeper(Sweeper):
    """Settings (``hydra.sweeper.*``): sampler (tpe | nsga2 | random), seed, n_trials (the
    total budget: a continued sweep runs only what is missing), n_jobs (trials per batch; the
    launcher's n_jobs when null), objectives (names in the config's ``sweep.objective``; one for
    TPE, two for NSGA-II), storage (null: SQLite in the sweep directory), study_name, params
    (the search space in Hydra's sweep syntax, like the basic sweeper's), n_startup_trials (TPE's
    random trials before it models the space)."""

    def __init__(self, sampler: str = "tpe", seed: int | None = None, n_trials: int = 12,
                 n_jobs: int | None = None, objectives: Sequence[str] = ("forget",), storage: str | None = None,
                 study_name: str = "grun", params: dict[str, Any] | None = None, n_startup_trials: int = 10) -> None:
        self.settings = {"sampler": sampler, "seed": seed, "n_trials": n_trials, "n_jobs": n_jobs,
                         "objectives": list(objectives), "storage": storage, "study_name": study_name,
                         "n_startup_trials": n_startup_trials}
        self.params = dict(params or {})
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        from grun_cli.errors import GrunError
        from grun_cli.sweep.optuna_study import run_study

        assert self.config is not None
        launcher_jobs = OmegaConf.select(self.config, "hydra.launcher.n_jobs")
        try:
            return run_study(
                settings=self.settings, params=self.params, arguments=arguments, config=self.config,
                sweep_dir=Path(str(self.config.hydra.sweep.dir)), launch=self._launch,
                default_batch=int(launcher_jobs) if isinstance(launcher_jobs, int) and launcher_jobs > 0 else 1)
        except GrunError as e:
            print(f"grun sweep: error: {e}", file=sys.stderr)
            raise SystemExit(2) from None

    def _launch(self, overrides: list[list[str]], first_number: int) -> Any:
        self.validate_batch_is_legal(overrides)
        return self.launcher.launch(overrides, initial_job_idx=first_number)
