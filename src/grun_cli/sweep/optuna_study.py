"""The Optuna side of `grun sweep`: the search space from Hydra's sweep syntax, a study
persisted in SQLite in the sweep directory, and the ask -> launch -> tell loop.

Continuing: the same command with the same ``hydra.sweep.dir`` loads the study; trials that
were running when the sweep was killed are marked failed (``interrupted``) and their settings
are asked again first; ``n_trials`` is the total, so only the missing trials run (raise it to
extend a finished sweep). Trial numbers are Optuna's, and name the trial folders.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from grun_cli.errors import GrunError

log = logging.getLogger("grun.sweep")

SAMPLERS = ("tpe", "nsga2", "random")


def search_space(params: Mapping[str, Any], arguments: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """(fixed overrides, {key: Optuna distribution}) from ``hydra.sweeper.params`` and the
    command line. choice(...) and range(...) become categorical (values as Hydra's override
    text, so lists such as ``[2,3]`` work); interval(a, b) a float (log with ``tag(log, ...)``)
    or, for two integers, an int distribution."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import IntervalSweep
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    parser = OverridesParser.create()
    texts = [f"{k}={v}" for k, v in params.items()] + list(arguments)
    try:
        parsed = parser.parse_overrides(texts)
    except Exception as e:
        raise GrunError(f"search space: {str(e).splitlines()[0]}") from None
    fixed: list[str] = []
    space: dict[str, Any] = {}
    for o in parsed:
        key = o.get_key_element()
        if not o.is_sweep_override():
            fixed.append(o.input_line or f"{key}={o.get_value_element_as_str()}")
            continue
        value = o.value()
        if isinstance(value, IntervalSweep):
            lo, hi = value.start, value.end
            if isinstance(lo, int) and isinstance(hi, int) and "log" not in value.tags:
                space[key] = IntDistribution(lo, hi)
            else:
                if "log" in value.tags and (lo <= 0 or hi <= 0):
                    raise GrunError(f"{key}: tag(log, interval({lo}, {hi})) needs positive bounds")
                space[key] = FloatDistribution(float(lo), float(hi), log="log" in value.tags)
        elif o.is_discrete_sweep():
            choices = list(dict.fromkeys(o.sweep_string_iterator()))
            space[key] = CategoricalDistribution(choices)
        else:
            raise GrunError(f"{key}: the Optuna sweeper takes choice(...), range(...) or interval(...) sweeps")
    if not space:
        raise GrunError("the search space is empty: give hydra.sweeper.params (a sweep= config) or sweeps "
                        "such as 'train.lr=choice(1e-3,4e-3)' on the command line")
    return fixed, space


def _override_value(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def make_sampler(name: str, seed: int | None, n_objectives: int, n_startup_trials: int = 10) -> Any:
    """``n_startup_trials``: TPE's random trials before it models the space (Optuna's default
    10: with a 12-trial budget that is a random search with two guided trials)."""
    import optuna

    if name not in SAMPLERS:
        raise GrunError(f"hydra.sweeper.sampler={name} is not one of {', '.join(SAMPLERS)}")
    if name == "tpe":
        if n_objectives != 1:
            raise GrunError("sampler=tpe optimises one objective; use sampler=nsga2 for objectives=[forget,utility]")
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def _space_signature(space: Mapping[str, Any]) -> dict[str, str]:
    from optuna.distributions import distribution_to_json

    return {k: distribution_to_json(v) for k, v in sorted(space.items())}


def open_study(settings: Mapping[str, Any], sweep_dir: Path, space: Mapping[str, Any], directions: list[str]) -> Any:
    """Create or load the study; refuse to continue one with another search space or objectives.

    The sampler's seed is offset by the trials the study already has: a continued sweep then
    draws new settings (a re-seeded sampler would repeat the first ones) and stays repeatable."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    storage = settings.get("storage") or f"sqlite:///{(sweep_dir / 'optuna.db').resolve()}"
    name = str(settings.get("study_name") or "grun")
    make_sampler(str(settings.get("sampler", "tpe")), None, len(directions))  # check the name first
    study = optuna.create_study(study_name=name, storage=storage, directions=directions, load_if_exists=True)
    seed = settings.get("seed")
    if seed is not None:
        seed = int(seed) + len(study.get_trials(deepcopy=False))
    study.sampler = make_sampler(str(settings.get("sampler", "tpe")), seed, len(directions),
                                 int(settings.get("n_startup_trials", 10)))
    signature = {"space": _space_signature(space), "directions": directions}
    stored = study.user_attrs.get("signature")
    if stored is None:
        study.set_user_attr("signature", signature)
    elif stored != signature:
        raise GrunError(f"{sweep_dir} holds a study with another search space or objectives; continue it with "
                        "the same sweep settings, or give a new hydra.sweep.dir")
    return study


def recover_interrupted(study: Any) -> int:
    """Mark trials left RUNNING by a killed sweep as failed (interrupted) and ask their
    settings again first. Returns how many."""
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
    for t in stale:
        if t.state == TrialState.WAITING:  # enqueued by a previous continuation, never started
            continue
        study._storage.set_trial_user_attr(t._trial_id, "status", "interrupted")
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
        log.warning("trial %d was interrupted; its settings run again", t.number)
    return sum(t.state == TrialState.RUNNING for t in stale)


def counted(study: Any) -> int:
    """Trials that used the budget: complete ones and real failures (not interruptions)."""
    from optuna.trial import TrialState

    return sum(t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and t.user_attrs.get("status") != "interrupted")
               for t in study.get_trials(deepcopy=False))


def _consecutive(trials: list[Any]) -> list[list[Any]]:
    """Split a batch into runs of consecutive trial numbers (a launcher numbers its jobs
    from one start index)."""
    runs: list[list[Any]] = []
    for t in sorted(trials, key=lambda t: t.number):
        if runs and t.number == runs[-1][-1].number + 1:
            runs[-1].append(t)
        else:
            runs.append([t])
    return runs


def _tell(study: Any, trial: Any, job_return: Any, names: list[str]) -> None:
    from optuna.trial import TrialState

    try:
        record = job_return.return_value
    except Exception as e:  # the task raised past the trial's own guard
        record = {"status": "failed", "reason": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    record = record if isinstance(record, Mapping) else {"status": "failed", "reason": "the trial returned nothing"}
    values = [float((record.get("objectives") or {}).get(n, math.nan)) for n in names]
    status = record.get("status")
    trial.set_user_attr("status", status)
    if record.get("reason"):
        trial.set_user_attr("reason", str(record["reason"])[:500])
    if status == "complete" and all(math.isfinite(v) for v in values):
        study.tell(trial, values)
    else:
        study.tell(trial, state=TrialState.FAIL)
        log.warning("trial %d %s: %s", trial.number, status, record.get("reason"))


def prepare(settings: Mapping[str, Any], params: Mapping[str, Any], arguments: Sequence[str],
            config: DictConfig, sweep_dir: Path) -> tuple[list[str], list[str], dict[str, Any], int, Any]:
    """Check every sweeper setting and open the study: (objective names, fixed overrides,
    search space, n_trials, study). The sweep's start calls it before any model loads."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise GrunError("the Optuna sweeper needs Optuna: pip install 'grun-cli[sweep]' (or use sweep=grid)") from None
    names = [str(n) for n in settings.get("objectives") or ["forget"]]
    objective_cfg = config.get("sweep", {}).get("objective", {})
    missing = [n for n in names if n not in objective_cfg]
    if missing:
        raise GrunError(f"hydra.sweeper.objectives={names}: {missing} not in sweep.objective "
                        f"({', '.join(objective_cfg)})")
    directions = [str(objective_cfg[n].get("direction", "maximize")) for n in names]
    try:
        n_trials = int(settings.get("n_trials"))
    except (TypeError, ValueError):
        raise GrunError(f"hydra.sweeper.n_trials={settings.get('n_trials')}: give a number of trials") from None
    if n_trials < 1:
        raise GrunError(f"hydra.sweeper.n_trials={n_trials}: give at least 1")
    fixed, space = search_space(params, arguments)
    return names, fixed, space, n_trials, open_study(settings, sweep_dir, space, directions)


def run_study(*, settings: Mapping[str, Any], params: Mapping[str, Any], arguments: Sequence[str],
              config: DictConfig, sweep_dir: Path, launch: Callable[[list[list[str]], int], Any],
              default_batch: int) -> Any:
    names, fixed, space, n_trials, study = prepare(settings, params, arguments, config, sweep_dir)
    batch = int(settings.get("n_jobs") or default_batch)
    if batch < 1:
        raise GrunError(f"hydra.sweeper.n_jobs={batch}: give at least 1, or null for the launcher's n_jobs")
    recover_interrupted(study)
    done = counted(study)
    log.info("Optuna %s sweep of %s: %d of %d trials done, %d to go (batches of %d); study %s",
             settings.get("sampler"), ", ".join(space), done, n_trials, max(0, n_trials - done), batch,
             sweep_dir / "optuna.db")
    while done < n_trials:
        trials = [study.ask(dict(space)) for _ in range(min(batch, n_trials - done))]
        for run in _consecutive(trials):
            overrides = [[*fixed, *(f"{k}={_override_value(v)}" for k, v in t.params.items())] for t in run]
            returns = launch(overrides, run[0].number)
            for t, r in zip(run, returns, strict=True):
                _tell(study, t, r, names)
        done = counted(study)
    return study
