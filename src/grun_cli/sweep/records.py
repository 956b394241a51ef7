"""The sweep directory's records: one ``trial.json`` per trial folder (written by the trial
itself, so it works with any launcher, a cluster's included) and ``trials.jsonl``, rebuilt
from them. A trial folder without a ``trial.json`` was interrupted (killed, pre-empted)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from grun_cli.io_utils import atomic_write_json, write_jsonl

log = logging.getLogger(__name__)

TRIAL_FILE = "trial.json"
TRIALS_FILE = "trials.jsonl"
SWEEP_FILE = "sweep.json"
BEST_FILE = "best.json"
STATUSES = ("complete", "failed", "interrupted")


def swept_params(overrides: Sequence[str], base: Sequence[str]) -> dict[str, str]:
    """The overrides a trial has beyond the sweep's own command line: its hyperparameters,
    as ``key -> value`` text exactly as Hydra received them."""
    fixed = set(base)
    out = {}
    for o in overrides:
        if o in fixed or "=" not in o:
            continue
        key, value = o.split("=", 1)
        out[key.lstrip("+~")] = value
    return out


def write_trial(folder: Path, record: Mapping[str, Any]) -> None:
    atomic_write_json(folder / TRIAL_FILE, dict(record))


def _trial_folders(sweep_dir: Path) -> list[Path]:
    """Numbered trial folders (Hydra's ``${hydra.job.num}`` subdirs), in number order."""
    return sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def _hydra_record(folder: Path, name: str) -> Any:
    """A file Hydra wrote into a trial's .hydra/ (its overrides, its composed config), or
    None: the settings of a trial that never finished."""
    import yaml

    try:
        return yaml.safe_load((folder / ".hydra" / name).read_text())
    except (OSError, yaml.YAMLError):
        return None


def _hydra_overrides(folder: Path) -> list[str]:
    got = _hydra_record(folder, "overrides.yaml")
    return [str(o) for o in got] if isinstance(got, list) else []


def _hydra_cell(folder: Path) -> dict[str, Any]:
    config = _hydra_record(folder, "config.yaml")
    if not isinstance(config, dict):
        return {"method": None, "adapter": None}
    return {"method": (config.get("method") or {}).get("name"), "adapter": (config.get("adapter") or {}).get("kind")}


def read_trials(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every trial of a sweep directory. A folder that has a Hydra config but no trial.json
    is reported as interrupted, so a killed trial never looks like a finished one."""
    sweep_dir = Path(sweep_dir)
    trials = []
    for folder in _trial_folders(sweep_dir) if sweep_dir.is_dir() else []:
        path = folder / TRIAL_FILE
        if path.is_file():
            try:
                trials.append(json.loads(path.read_text()))
                continue
            except json.JSONDecodeError:
                log.warning("%s is not valid JSON; counting the trial as interrupted", path)
        if (folder / ".hydra").is_dir():
            overrides = _hydra_overrides(folder)
            trials.append({"number": int(folder.name), "run_dir": folder.name, "status": "interrupted",
                           "reason": "no trial.json: the trial was killed before it finished",
                           "params": swept_params(overrides, read_sweep(sweep_dir).get("overrides", [])),
                           "overrides": overrides, **_hydra_cell(folder), "metrics": {}, "objectives": {}})
    return trials


def refresh_trials_file(sweep_dir: Path) -> list[dict[str, Any]]:
    """Rewrite trials.jsonl from the trial folders (atomically; concurrent trials may each
    do it, and the sweep's end does it once more) and return the trials."""
    trials = read_trials(sweep_dir)
    write_jsonl(Path(sweep_dir) / TRIALS_FILE, trials)
    return trials


def read_sweep(sweep_dir: Path) -> dict[str, Any]:
    path = Path(sweep_dir) / SWEEP_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def cell(record: Mapping[str, Any]) -> str:
    """The table cell a trial belongs to: ``method/adapter``."""
    return f"{record.get('method')}/{record.get('adapter')}"
