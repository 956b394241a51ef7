"""`grun sweep` end to end through the real CLI on the tiny model: grid and Optuna sweeps,
sequential, local parallel (joblib) and submitit's local executor; a failing trial is recorded
and the sweep goes on; a killed Optuna sweep continues from its SQLite study and extends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from grun_cli.config import config_dir

from conftest import REPO, SMALL_DATA, grun

QUICK = [*SMALL_DATA, "probe.max_rows=8", "eval.max_rows=4", "train.max_steps=3",
         'target.overrides=["train.max_steps=5","extra_splits=[]","check.max_rows=0"]']


def trials(sweep: Path) -> list[dict]:
    return [json.loads(x) for x in (sweep / "trials.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_grid_sweep_records_a_failing_trial_and_goes_on(clean_env: dict[str, str], tmp_path: Path) -> None:
    sweep = tmp_path / "grid"
    env = {**clean_env, "WANDB_MODE": "offline"}
    env.pop("WANDB_API_KEY", None)
    # rank 200 passes the settings check (the edit's width is known once the model loads) and
    # fails in its trial: the sweep records it and goes on
    r = grun("sweep", *QUICK, "logger=wandb", "adapter.rank=4,200", f"hydra.sweep.dir={sweep}", env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    ok, bad = trials(sweep)
    assert (ok["number"], ok["status"], ok["params"]) == (0, "complete", {"adapter.rank": "4"})
    assert (bad["number"], bad["status"], bad["params"]) == (1, "failed", {"adapter.rank": "200"})
    assert bad["reason"].startswith("adapter.rank=200 must be in 1..128")
    assert (sweep / "1" / "FAILED").is_file() and not (sweep / "1" / "run_card.json").exists()
    metrics = json.loads((sweep / "0" / "metrics.json").read_text())
    assert ok["metrics"] == metrics and ok["objectives"]["utility"] == metrics["model_utility"]
    assert ok["method"] == "npo" and ok["adapter"] == "grun"
    # the target and retain models were evaluated once: the utility bar and the report's rows
    target = json.loads((sweep / "references" / "target" / "run_card.json").read_text())
    assert target["role"] == "target" and target["command"] == "eval"
    assert json.loads((sweep / "references" / "retain" / "metrics.json").read_text())["forget_quality"] == 1.0
    best = json.loads((sweep / "best.json").read_text())
    tu = json.loads((sweep / "references" / "target" / "metrics.json").read_text())["model_utility"]
    assert best["target_utility"] == tu and best["bar"] == pytest.approx(0.9 * tu)
    cell = best["cells"]["npo/grun"]
    expect = 0 if metrics["model_utility"] >= 0.9 * tu else None
    assert (cell["selected"], cell["trials"], cell["failed"]) == (expect, 2, 1)
    selected = sweep / "selected" / "npo_grun.yaml"  # the choice as a ready experiment config
    assert selected.is_file() == (expect is not None)
    if expect is not None:
        body = yaml.safe_load(selected.read_text())
        assert body["adapter"] == {"rank": 4} and {"override /adapter": "grun"} in body["defaults"]
    assert "selection: highest forget_quality among complete trials" in r.stdout
    assert "trial 1 failed: adapter.rank=200" in r.stdout
    assert json.loads((sweep / "sweep.json").read_text())["overrides"][-1] == "adapter.rank=4,200"
    # W&B: one run per trial (job_type trial) in the sweep's group, and a summary run with the table
    (trial_run,) = (sweep / "0" / "wandb").glob("offline-run-*/*.wandb")
    assert b"sweep-grid" in trial_run.read_bytes() and b"trial" in trial_run.read_bytes()
    (summary,) = (sweep / "wandb").glob("offline-run-*")
    (table,) = summary.glob("files/media/table/trials_*.table.json")
    rows = json.loads(table.read_text())["data"]
    assert [(row[0], row[2]) for row in rows] == [(0, "complete"), (1, "failed")]


@pytest.mark.slow
def test_joblib_launcher_runs_trials_in_parallel_pinned(clean_env: dict[str, str], tmp_path: Path) -> None:
    sweep = tmp_path / "par"
    r = grun("sweep", *QUICK, "train.lr=1e-3,4e-3", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
             f"hydra.sweep.dir={sweep}", env=clean_env)
    assert r.returncode == 0, r.stderr[-4000:]
    got = trials(sweep)
    assert [t["status"] for t in got] == ["complete", "complete"]
    assert sorted(t["params"]["train.lr"] for t in got) == ["0.001", "0.004"]
    assert {t["threads"] for t in got} == {max(1, (os.cpu_count() or 1) // 2)}
    assert (sweep / "best.json").is_file()


def _sweep_cmd(sweep: Path, n_trials: int, *extra: str) -> list[str]:
    return ["sweep", "sweep=optuna", *QUICK, "train.max_steps=12", "train.lr=tag(log,interval(1e-3,1e-2))",
            "adapter.rank=choice(2,4)", f"hydra.sweeper.n_trials={n_trials}", f"hydra.sweep.dir={sweep}", *extra]


@pytest.mark.slow
def test_optuna_sweep_killed_continues_and_extends(clean_env: dict[str, str], tmp_path: Path) -> None:
    sweep = tmp_path / "opt"
    exe = Path(sys.executable).with_name("grun")
    proc = subprocess.Popen([str(exe), *_sweep_cmd(sweep, 3)], env=clean_env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    # trial 1 has started once Hydra has written its record (the last file Hydra writes before the task)
    while not (sweep / "1" / ".hydra" / "overrides.yaml").is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the sweep ended before its second trial started"
    proc.send_signal(signal.SIGKILL)  # pre-emption: no chance to clean up
    proc.wait(timeout=60)
    assert (sweep / "0" / "trial.json").is_file() and not (sweep / "1" / "trial.json").exists()
    partial = json.loads((sweep / "best.json").read_text())  # the selection so far, marked partial
    assert partial["finished"] is False and partial["cells"]["npo/grun"]["trials"] == 1
    killed = yaml.safe_load((sweep / "1" / ".hydra" / "overrides.yaml").read_text())

    r = grun(*_sweep_cmd(sweep, 3), env=clean_env)  # the same command continues the study
    assert r.returncode == 0, r.stderr[-4000:]
    got = trials(sweep)
    assert [(t["number"], t["status"]) for t in got] == [(0, "complete"), (1, "interrupted"), (2, "complete"),
                                                         (3, "complete")]
    assert json.loads((sweep / "best.json").read_text())["finished"] is True
    retried = got[2]["params"]  # the interrupted trial's settings are asked again first
    assert [f"{k}={v}" for k, v in retried.items()] == [o for o in killed if o.split("=")[0] in retried]
    assert len({json.dumps(t["params"], sort_keys=True) for t in got if t["status"] == "complete"}) == 3

    r = grun(*_sweep_cmd(sweep, 4), env=clean_env)  # a larger budget extends the finished sweep
    assert r.returncode == 0, r.stderr[-4000:]
    got = trials(sweep)
    assert [t["number"] for t in got] == [0, 1, 2, 3, 4] and got[4]["status"] == "complete"
    assert got[4]["params"] not in [t["params"] for t in got[:4]]  # not a replay of the first draws

    import optuna

    study = optuna.load_study(study_name="grun", storage=f"sqlite:///{sweep / 'optuna.db'}")
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    assert study.trials[1].user_attrs["status"] == "interrupted"
    assert study.best_value == max(t["objectives"]["forget"] for t in got if t["status"] == "complete")

    r = grun(*_sweep_cmd(sweep, 4, "adapter.rank=choice(2,8)"), env=clean_env)
    assert r.returncode == 2 and "holds a study with another search space" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_submitit_local_executor_with_all_trials_failing(clean_env: dict[str, str], tmp_path: Path) -> None:
    """Slurm's launcher path (submitit) with its local executor; every trial fails, the sweep
    still ends cleanly with a best.json that says no trial was selected."""
    sweep = tmp_path / "sub"
    r = grun("sweep", "sweep=optuna", *QUICK, "adapter.rank=choice(200,300)", "hydra.sweeper.n_trials=2",
             "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={sweep}",
             env=clean_env)
    assert r.returncode == 0, r.stderr[-4000:]
    got = trials(sweep)
    assert [t["status"] for t in got] == ["failed", "failed"]
    assert all("must be in 1..128" in t["reason"] for t in got)
    assert list((sweep / ".submitit").iterdir()), "submitit wrote no job folders"
    cell = json.loads((sweep / "best.json").read_text())["cells"]["npo/grun"]
    assert cell["selected"] is None and cell["reason"].startswith("no complete trial")


@pytest.mark.parametrize("args, message", [
    (["select.rule=best"], "select.rule=best is not one of utility_bar, pareto"),
    (["sweep=optuna", "train.lr=choice(1e-3,4e-3)", "hydra.sweeper.sampler=cmaes"],
     "hydra.sweeper.sampler=cmaes is not one of tpe, nsga2, random"),
    (["sweep=optuna"], "the search space is empty"),
    (["sweep=optuna", "train.lr=choice(1e-3,4e-3)", "hydra.sweeper.objectives=[forget,utility]"],
     "sampler=tpe optimises one objective"),
    (["sweep.objective.forget.direction=up"], "direction=up is not one of maximize, minimize"),
    (["eval.enabled=false"], "sweep.objective.forget reads forget_quality, which only the evaluation measures"),
    (["adapter.layers=[2,3],[9]"], "adapter.layers=[9]: block [9] outside the model's decoder blocks 0..3"),
    (["sweep=optuna", "train.lr=choice(1e-3,-1)"], "train.lr=-1: input should be greater than 0 (a value of the search space)"),
])
def test_bad_sweep_settings_fail_before_anything_loads(clean_env: dict[str, str], tmp_path: Path,
                                                       args: list[str], message: str) -> None:
    started = time.time()
    r = grun("sweep", *QUICK, *args, f"hydra.sweep.dir={tmp_path / 's'}", env=clean_env)
    assert r.returncode == 2 and message in r.stderr, r.stderr[-2000:]
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "s" / "references").exists() and time.time() - started < 120


@pytest.fixture
def tune() -> Iterator:
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        yield lambda *o: compose("tune", overrides=list(o), return_hydra_config=True)
    GlobalHydra.instance().clear()


CELLS = sorted(p.stem for p in (config_dir() / "sweep").glob("*.yaml") if p.stem.startswith(("tofu_", "wmdp_")))


def test_every_ready_space_composes(tune) -> None:
    assert {f"tofu_{m}_{a}" for m in ("gd", "npo", "idk") for a in ("grun", "lora", "full")} <= set(CELLS)
    assert {"wmdp_rmu_grun", "wmdp_rmu_full", "wmdp_npo_grun", "wmdp_npo_full"} <= set(CELLS)
    budgets: dict[str, set[int]] = {}
    for name in CELLS:
        cfg = tune(f"sweep={name}")
        data, method, adapter = name.split("_")
        assert (cfg.data.name, cfg.method.name, cfg.adapter.kind) == (data, method, adapter)
        sweeper = cfg.hydra.sweeper
        assert sweeper._target_.endswith("GrunOptunaSweeper") and sweeper.params
        assert "train.lr" in sweeper.params
        budgets.setdefault(data, set()).add(sweeper.n_trials)
        metric = cfg.sweep.objective.forget.metric
        assert metric == ("forget_quality" if data == "tofu" else "after_forget_text_nll")
    # the same budget for every cell of a table: a fair comparison (TOFU 12 trials, WMDP 8)
    assert budgets == {"tofu": {12}, "wmdp": {8}}


def test_sweepers_and_launchers_compose(tune) -> None:
    assert tune().hydra.sweeper._target_.endswith("BasicSweeper")  # default: a grid
    nsga = tune("sweep=nsga2").hydra.sweeper
    assert nsga.sampler == "nsga2" and list(nsga.objectives) == ["forget", "utility"]
    slurm = tune("hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=60").hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher")
    assert (slurm.partition, slurm.gpus_per_node, slurm.timeout_min, slurm.array_parallelism) == ("gpu", 1, 60, 8)
    assert tune("hydra/launcher=joblib", "hydra.launcher.n_jobs=2").hydra.launcher.n_jobs == 2


def test_help_lists_sweep(clean_env: dict[str, str]) -> None:
    r = grun("--help", env=clean_env)
    assert "sweep" in r.stdout and "grun sweep sweep=tofu_npo_grun" in r.stdout
    r = grun("sweep", "--help", env=clean_env)
    assert r.returncode == 0 and "hyperparameter search" in r.stdout
