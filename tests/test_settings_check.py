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


def test_the_checked_settings_are_handed_down_typed() -> None:
    """check_settings returns the typed groups the engines are made from, with the values the
    YAML composed (no default of the schema's own in between)."""
    from grun_cli.methods.npo import NpoSettings
    from grun_cli.settings import GrunSettings, UnlearnTrain

    cfg = _composed("unlearn", ["method=npo", "adapter=grun", "train.lr=0.002", "method.beta=0.2"])
    settings = check_settings(cfg, "unlearn")
    assert isinstance(settings.train, UnlearnTrain) and settings.train.lr == 0.002
    assert isinstance(settings.method, NpoSettings) and settings.method.beta == 0.2
    assert isinstance(settings.adapter, GrunSettings) and settings.adapter.layers == list(cfg.model.grun_layers)
    assert settings.probe.batch_size == cfg.probe.batch_size and settings.seed == cfg.seed
    assert check_settings(_composed("finetune", []), "finetune").train.lr == _composed("finetune", []).train.lr



def test_the_check_validates_each_group_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """check_settings hands on the groups its checks validated (no second parse); a job's
    read_settings reads the same values of its own config."""
    import grun_cli.settings_check as settings_check
    from grun_cli.settings_check import read_settings

    cfg = _composed("unlearn", ["method=npo", "adapter=lora", "train.lr=0.003"])
    expected = read_settings(cfg, "unlearn")

    def refuse(*args, **kwargs):
        raise AssertionError("validated a second time")

    monkeypatch.setattr(settings_check, "parse", refuse)
    checked = check_settings(cfg, "unlearn")
    assert checked == expected and checked.train.lr == 0.003


@pytest.mark.parametrize("adapter", ["grun", "lora", "full"])
def test_an_adapters_saved_settings_read_as_its_config(adapter: str) -> None:
    """grun_adapter.json records the adapter's settings as the config gave them (same keys,
    order and number types: LoRA's alpha 32 stays 32), so a refactor of the schema does not
    change the saved bytes; a value changed on the typed settings is recorded as changed."""
    import json

    from omegaconf import OmegaConf

    cfg = _composed("unlearn", [f"adapter={adapter}"])
    settings = check_settings(cfg, "unlearn").adapter
    given = OmegaConf.to_container(cfg.adapter, resolve=True)
    assert json.dumps(settings.plain()) == json.dumps(given)
    changed = settings.model_copy(update={"unlearn_warmup_steps": 3}).plain()
    assert changed == {**given, "unlearn_warmup_steps": 3} and list(changed) == list(given)


def test_the_schema_holds_no_defaults() -> None:
    """conf/ holds every default (what `--cfg job` shows): a typed field with a default of its
    own would drift from the YAML (LoRA's dropout once did: 0.05 in YAML, 0.0 in the schema)."""
    from grun_cli import settings
    from grun_cli.methods import METHODS

    groups = [settings.Train, settings.UnlearnTrain, settings.ModelSettings, settings.SequenceSettings,
              settings.Probe, settings.Run, settings.UnlearnRun, *settings.ADAPTER_SETTINGS.values(),
              *[METHODS.get(name).settings_type for name in METHODS.names()]]
    with_defaults = [f"{g.__name__}.{name}" for g in groups for name, field in g.model_fields.items()
                     if not field.is_required()]
    assert not with_defaults


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
