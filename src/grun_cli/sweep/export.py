"""The selected trial of each (method, adapter) cell as a ready experiment config.

A sweep ends in a choice of settings; users (and `make repro-ci`) rerun that choice with
``grun unlearn experiment=<name>``. ``selected/<method>_<adapter>.yaml`` in the sweep
directory is that config: the trial's groups and overrides, nothing else, so it composes on
top of the same defaults the trial had. Copy it under ``conf/experiment/`` to keep it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from grun_cli.io_utils import atomic_write_text
from grun_cli.sweep.records import read_sweep

SELECTED_DIR = "selected"
#: config groups a trial may choose on the command line (a defaults override in the config)
_GROUPS = ("model", "data", "method", "adapter", "train", "eval", "logger")
#: overrides that belong to the sweep, not to the run it selected
_SWEEP_ONLY = ("sweep", "hydra", "select", "seed")
#: overrides of how this machine ran the sweep, not of the recipe: a confirmation skipped, the
#: retain model's logs given as a file here (a rerun elsewhere builds or finds its own)
_INVOCATION = ("confirm", "eval.retain_logs")


def _value(text: str) -> Any:
    """A command-line value as YAML reads it ("0.002" -> 0.002, "[2,3]" -> [2, 3])."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def split_overrides(overrides: Sequence[str]) -> tuple[dict[str, str], dict[str, Any]]:
    """Hydra overrides -> (group choices, nested key values), leaving out the sweep's own."""
    groups: dict[str, str] = {}
    values: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            continue
        key = key.lstrip("+~")
        if key.split(".")[0].split("/")[0] in _SWEEP_ONLY or key in _INVOCATION:
            continue
        if key in _GROUPS:
            groups[key] = text
            continue
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _value(text)
    return groups, values


def experiment_yaml(trial: Mapping[str, Any], card: Mapping[str, Any], sweep_name: str | None,
                    rule: str, budget: int) -> str:
    """The experiment config of one selected trial (``card``: its run_card.json)."""
    config = card.get("config") or {}
    groups, values = split_overrides(trial.get("overrides") or [])
    chosen = {
        "data": (config.get("data") or {}).get("name"),
        "method": (config.get("method") or {}).get("name") or trial.get("method"),
        "adapter": (config.get("adapter") or {}).get("kind") or trial.get("adapter"),
        **groups,
    }
    metrics = trial.get("metrics") or {}
    shown = ", ".join(f"{k} {metrics[k]:.3g}" for k in ("forget_quality", "model_utility",
                                                        "after_forget_text_nll", "after_retain_text_nll")
                      if isinstance(metrics.get(k), (int, float)))
    model = (config.get("model") or {}).get("name")
    head = [
        "# @package _global_",
        f"# Selected by `grun sweep{' sweep=' + sweep_name if sweep_name else ''}`: trial {trial.get('number')} "
        f"of {budget} ({model} model, seed {config.get('seed')}).",
        f"# Rule: {rule}.",
    ]
    if shown:
        head.append(f"# The trial measured: {shown}.")
    head.append(f"# Run it: grun unlearn experiment=<this file's name>{' model=' + model if model else ''}")
    body: dict[str, Any] = {"defaults": [{f"override /{g}": v} for g, v in chosen.items() if v]}
    body.update(values)
    return "\n".join(head) + "\n" + yaml.safe_dump(body, sort_keys=False, default_flow_style=None)


def write_selected(sweep_dir: Path, best: Mapping[str, Any], trials: Sequence[Mapping[str, Any]]) -> list[Path]:
    """``selected/<method>_<adapter>.yaml`` for every cell with a selected trial."""
    sweep_dir = Path(sweep_dir)
    by_number = {t.get("number"): t for t in trials}
    sweep_name = next((o.split("=", 1)[1] for o in read_sweep(sweep_dir).get("overrides", [])
                       if o.startswith("sweep=")), None)
    written = []
    for cell, info in (best.get("cells") or {}).items():
        trial = by_number.get(info.get("selected"))
        if trial is None:
            continue
        card_path = sweep_dir / str(trial.get("run_dir", trial.get("number"))) / "run_card.json"
        card = json.loads(card_path.read_text()) if card_path.is_file() else {}
        budget = int(info.get("complete", 0)) + int(info.get("failed", 0))
        path = sweep_dir / SELECTED_DIR / f"{cell.replace('/', '_')}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, experiment_yaml(trial, card, sweep_name, str(best.get("rule", "")), budget))
        written.append(path)
    return written
