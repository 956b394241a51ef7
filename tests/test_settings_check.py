"""The settings schema (settings_check.py): every shipped config passes it (no false alarms),
its scheduler list follows transformers, and several mistakes are reported together, one line
each, before anything loads."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from grun_cli.config import config_dir
from grun_cli.settings_check import SCHEDULERS, SettingsError, check_settings, model_depth

from conftest import grun

EXPERIMENTS = sorted(str(p.relative_to(config_dir() / "experiment").with_suffix(""))
                     for p in (config_dir() / "experiment").rglob("*.yaml"))


def _composed(config: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config, overrides=overrides)


def test_the_scheduler_list_is_transformers_own() -> None:
    from transformers.trainer_utils import SchedulerType

    assert set(SCHEDULERS) == {s.value for s in SchedulerType}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_shipped_experiment_passes(experiment: str) -> None:
    check_settings(_composed("unlearn", [f"experiment={experiment}"]), "unlearn")


@pytest.mark.parametrize("overrides", [[f"method={m}", f"adapter={a}"] for m in ("ga", "gd", "idk", "idkdpo", "npo",
                                                                                  "rmu", "simnpo")
                                       for a in ("grun", "lora", "full")] + [["data=wmdp", "method=rmu"],
                                                                             ["data=tofu"], ["model=llama3.1"]])
def test_every_method_and_adapter_default_passes(overrides: list[str]) -> None:
    check_settings(_composed("unlearn", overrides), "unlearn")


def test_finetune_and_eval_defaults_pass() -> None:
    check_settings(_composed("finetune", []), "finetune")
    check_settings(_composed("finetune", ["model=llama3.1", "data=tofu"]), "finetune")
    check_settings(_composed("evaluate", []), "eval")


def test_problems_are_collected_not_stopped_at_the_first() -> None:
    cfg = _composed("unlearn", ["train.lr=-1", "adapter.rank=0", "adapter.layers=[2,9]", "seed=-3"])
    with pytest.raises(SettingsError) as e:
        check_settings(cfg, "unlearn")
    assert [p.split(":")[0].split("=")[0] for p in e.value.problems] == ["seed", "train.lr", "adapter.rank",
                                                                         "adapter.layers"]


def test_model_depth_comes_from_the_config_file(tmp_path: Path) -> None:
    assert model_depth({"architecture": {"num_layers": 4}}) == 4
    (tmp_path / "config.json").write_text('{"num_hidden_layers": 32}')
    assert model_depth({"name_or_path": str(tmp_path)}) == 32
    assert model_depth({"name_or_path": "meta-llama/Llama-3.1-8B"}) is None  # not downloaded: checked at load


def test_several_mistakes_in_one_command(clean_env: dict[str, str], tmp_path: Path) -> None:
    started = time.time()
    r = grun("unlearn", "train.lr=abc", "adapter.rank=0", "train.batch_size=-2", f"hydra.run.dir={tmp_path / 'r'}",
             env=clean_env)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert lines == ["grun unlearn: error: train.lr=abc: input should be a valid number, unable to parse string as "
                     "a number",
                     "grun unlearn: error: train.batch_size=-2: input should be greater than or equal to 1",
                     "grun unlearn: error: adapter.rank=0: input should be greater than or equal to 1"], r.stderr
    assert time.time() - started < 120 and not (tmp_path / "r").exists()  # generous: parallel workers
