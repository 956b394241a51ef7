"""A sweep's selected trial as a ready experiment config (sweep/export.py), and the selected
tiny TOFU configs in conf/experiment/tiny_tofu compose to the settings their sweeps chose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from grun_cli.config import config_dir
from grun_cli.sweep.export import experiment_yaml, split_overrides, write_selected

REPO = Path(__file__).resolve().parents[1]


def test_overrides_split_into_groups_and_nested_values() -> None:
    groups, values = split_overrides([
        "sweep=tofu_npo_grun", "data=tofu", "train.lr=0.002", "adapter.layers=[1,3]", "+method.beta=0.05",
        "hydra.sweep.dir=x", "seed=3", "select.min_utility=0.8", "adapter.gate=mlp",
        "confirm=false", "eval.retain_logs=/here/TOFU_EVAL.json", "eval.limit=5"])
    assert groups == {"data": "tofu"}
    assert values == {"train": {"lr": 0.002}, "adapter": {"layers": [1, 3], "gate": "mlp"}, "method": {"beta": 0.05},
                      "eval": {"limit": 5}}  # how this machine ran it (confirm, a retain log's path) is not the recipe


def test_experiment_yaml_has_the_trials_groups_and_values() -> None:
    trial = {"number": 10, "overrides": ["sweep=tofu_npo_grun", "train.lr=0.002", "adapter.rank=8"],
             "metrics": {"forget_quality": 8.3e-16, "model_utility": 0.867}}
    card = {"config": {"seed": 42, "model": {"name": "tiny"}, "data": {"name": "tofu"},
                       "method": {"name": "npo"}, "adapter": {"kind": "grun"}}}
    text = experiment_yaml(trial, card, "tofu_npo_grun", "the rule", 12)
    assert text.startswith("# @package _global_\n")
    assert "trial 10 of 12" in text and "forget_quality 8.3e-16" in text and "Rule: the rule." in text
    body = yaml.safe_load(text)
    assert body["defaults"] == [{"override /data": "tofu"}, {"override /method": "npo"}, {"override /adapter": "grun"}]
    assert body["train"] == {"lr": 0.002} and body["adapter"] == {"rank": 8}


def test_write_selected_skips_cells_without_a_selection(tmp_path: Path) -> None:
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "run_card.json").write_text(json.dumps({"config": {"data": {"name": "tofu"}}}))
    trials = [{"number": 0, "run_dir": "0", "method": "gd", "adapter": "lora", "overrides": ["train.lr=1"]}]
    best = {"rule": "r", "cells": {"gd/lora": {"selected": 0, "complete": 1}, "npo/full": {"selected": None}}}
    written = write_selected(tmp_path, best, trials)
    assert [p.name for p in written] == ["gd_lora.yaml"]


SELECTED = sorted(p.stem for p in (config_dir() / "experiment" / "tiny_tofu").glob("*.yaml"))


@pytest.mark.parametrize("cell", SELECTED)
def test_selected_tiny_configs_compose_to_their_sweeps_choice(unlearn_composer, cell: str) -> None:
    """Each conf/experiment/tiny_tofu/<cell>.yaml gives the settings its sweep selected
    (experiments/tofu_forget05/sweeps/<cell>/best.json), on top of the tiny recipe."""
    cfg = unlearn_composer(f"experiment=tiny_tofu/{cell}")
    method, adapter = cell.split("_")
    assert (cfg.data.name, cfg.method.name, cfg.adapter.kind) == ("tofu", method, adapter)
    best = json.loads((REPO / "experiments" / "tofu_forget05" / "sweeps" / cell / "best.json").read_text())
    params = best["cells"][f"{method}/{adapter}"]["params"]
    for key, text in params.items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert node == yaml.safe_load(text), key
