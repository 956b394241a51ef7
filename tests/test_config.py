"""Config composition: every group option composes, recipes follow the model, overrides win."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from omegaconf import OmegaConf

from grun_cli.config import config_dir

from conftest import _composer

CONF = config_dir()


FINETUNE_EXPERIMENTS = {"tofu_target", "tofu_retain"}


@pytest.fixture
def composer() -> Iterator:
    yield from _composer("finetune")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_groups_exist() -> None:
    for group in ("model", "data", "logger", "paths", "hydra", "experiment", "recipe", "method",
                  "adapter", "train"):
        assert options(group), f"config group {group}/ is empty"
    assert {"tiny", "llama3.1", "mistral", "hf", "smollm2"} <= set(options("model"))
    assert {"tofu", "synthetic"} <= set(options("data"))
    assert {"wandb", "none"} <= set(options("logger"))


@pytest.mark.parametrize("model", ["tiny", "llama3.1", "mistral", "hf", "smollm2"])
@pytest.mark.parametrize("data", ["tofu", "synthetic"])
@pytest.mark.parametrize("logger", ["wandb", "none"])
def test_every_combination_composes(composer, model: str, data: str, logger: str) -> None:
    cfg = composer(f"model={model}", f"data={data}", f"logger={logger}")
    # resolve everything that does not need Hydra's runtime
    OmegaConf.to_container(cfg.model, resolve=True)
    OmegaConf.to_container(cfg.data, resolve=True)
    OmegaConf.to_container(cfg.train, resolve=True)
    assert cfg.model.name == model and cfg.data.name == data and cfg.logger.backend == logger


@pytest.mark.parametrize("experiment", sorted(FINETUNE_EXPERIMENTS))
def test_finetune_experiments_compose(composer, experiment: str) -> None:
    cfg = composer(f"experiment={experiment}")
    assert cfg.split in ("full", "retain", "forget")


@pytest.mark.parametrize("experiment", sorted(set(options("experiment")) - FINETUNE_EXPERIMENTS))
def test_unlearn_experiments_compose(unlearn_composer, experiment: str) -> None:
    cfg = unlearn_composer(f"experiment={experiment}", "model=llama3.1")
    OmegaConf.to_container(cfg.adapter, resolve=True)
    assert cfg.data.name == ("wmdp" if "wmdp" in experiment else "tofu")


@pytest.mark.parametrize("method", ["ga", "gd", "npo", "simnpo", "idk", "idkdpo", "rmu"])
@pytest.mark.parametrize("adapter", ["grun", "lora", "full"])
def test_every_method_adapter_composes(unlearn_composer, method: str, adapter: str) -> None:
    cfg = unlearn_composer(f"method={method}", f"adapter={adapter}")
    assert cfg.method.name == method and cfg.adapter.kind == adapter
    assert cfg.data.subset.retain_authors == 30  # tiny recipe


def test_unlearn_paper_settings(unlearn_composer) -> None:
    cfg = unlearn_composer("experiment=grun_tofu_gd", "model=llama3.1")
    assert cfg.train.lr == 4e-3 and cfg.train.epochs == 40 and cfg.train.batch_size == 16
    assert cfg.train.weight_decay == 0.0 and cfg.adapter.rank == 4 and cfg.adapter.gate_weight == 10.0
    assert list(cfg.adapter.layers) == [20, 25, 31] and cfg.method.retain_weight == 2.0
    assert cfg.pairing == "fixed" and cfg.data.subset.retain_authors is None
    npo = unlearn_composer("experiment=grun_tofu_npo", "model=llama3.1")
    assert npo.method.beta == 0.1 and npo.method.forget_weight == 100.0 and npo.method.retain_weight == 1.0
    lora = unlearn_composer("experiment=tofu_lora_baseline", "model=llama3.1", "method=npo")
    assert lora.adapter.rank == 4 and lora.adapter.alpha == 32 and lora.adapter.dropout == 0.05
    assert lora.train.lr == 1e-4
    full = unlearn_composer("experiment=tofu_full_baseline", "model=mistral", "method=gd")
    assert full.train.lr == 1e-5 and full.train.epochs == 10 and full.train.batch_size * full.train.grad_accum == 32
    assert full.train.weight_decay == 0.01


def test_unlearn_defaults(unlearn_composer) -> None:
    cfg = unlearn_composer()
    assert (cfg.model.name, cfg.data.name, cfg.method.name, cfg.adapter.kind) == ("tiny", "synthetic", "npo", "grun")
    assert list(cfg.adapter.layers) == [2, 3] and cfg.adapter.gate == "mlp" and cfg.pairing == "random"


def test_defaults_are_the_offline_tiny_recipe(composer) -> None:
    cfg = composer()
    assert cfg.model.name == "tiny" and cfg.model.name_or_path is None
    assert cfg.data.name == "synthetic"
    assert cfg.train.lr == 3e-3 and cfg.train.epochs == 20 and cfg.train.batch_size == 16
    assert cfg.data.subset.retain_authors == 30
    assert list(cfg.extra_splits) == ["real_authors", "world_facts"]


def test_paper_recipes_follow_the_model(composer) -> None:
    llama = composer("model=llama3.1", "data=tofu")
    assert llama.model.name_or_path == "meta-llama/Llama-3.1-8B"
    assert list(llama.model.grun_layers) == [20, 25, 31]
    assert llama.train.lr == 1e-5 and llama.train.epochs == 5
    assert llama.train.batch_size * llama.train.grad_accum == 32
    assert llama.data.subset.retain_authors is None and list(llama.extra_splits) == []
    mistral = composer("model=mistral")
    assert mistral.model.name_or_path == "mistralai/Mistral-7B-v0.1" and mistral.train.epochs == 8


def test_command_line_overrides_beat_recipe(composer) -> None:
    cfg = composer("train.lr=0.1", "data.subset.retain_authors=5", "recipe=finetune_hf")
    assert cfg.train.lr == 0.1 and cfg.data.subset.retain_authors == 5
    assert cfg.train.epochs == 5  # from finetune_hf, not the tiny recipe


def test_experiment_switches_data_and_split(composer) -> None:
    cfg = composer("experiment=tofu_retain", "data.forget_split=forget10")
    assert cfg.data.name == "tofu" and cfg.split == "retain" and cfg.data.forget_split == "forget10"
    assert cfg.data.subset.retain_authors == 30  # tiny recipe still applies


def test_unknown_key_is_rejected(composer) -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="train.lrr"):
        composer("train.lrr=1")


def test_env_paths(composer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRUN_DATA_DIR", "/data/root")
    monkeypatch.setenv("GRUN_CACHE_DIR", "/cache/root")
    cfg = composer()
    assert cfg.paths.data_dir == "/data/root" and cfg.paths.cache_dir == "/cache/root"
    monkeypatch.delenv("GRUN_DATA_DIR")
    assert composer().paths.data_dir is None


def test_tiny_reference_models_start_from_the_base(unlearn_composer) -> None:
    """The retain model (and target) are fine-tuned from the freshly built tiny base even when
    the run names a checkpoint: starting from the target would leak the forget set."""
    from grun_cli.models.target import finetune_config, recipe_hash

    cfg = unlearn_composer("model.name_or_path=/some/target/checkpoint")
    ft = finetune_config(cfg, "retain")
    assert ft.model.name_or_path is None and ft.split == "retain"
    assert ft.data.subset.retain_authors == 30 and list(ft.extra_splits) == ["real_authors", "world_facts"]
    # settings that do not change the trained weights do not change the cache key
    other = finetune_config(unlearn_composer("model.grun_layers=[1]", "model.device=cpu", "model.rmu.layer=0"), "retain")
    assert recipe_hash(other) == recipe_hash(ft)
    assert recipe_hash(finetune_config(cfg, "full")) != recipe_hash(ft)


def test_wmdp_data_brings_its_evaluation_and_recipes(unlearn_composer, composer) -> None:
    cfg = unlearn_composer("data=wmdp", "method=rmu", "adapter=full")
    assert cfg.eval.kind == "lm_eval" and list(cfg.eval.tasks) == ["wmdp_bio", "wmdp_cyber", "mmlu"]
    assert unlearn_composer().eval.kind == "tofu"  # QA data: TOFU's evaluation
    assert unlearn_composer("data=wmdp", "eval=tofu").eval.kind == "tofu"  # an explicit choice wins
    # RMU on the full adapter: the WMDP authors' recipe, scaled by model.rmu
    assert list(cfg.adapter.modules) == ["mlp.down_proj"] and list(cfg.adapter.layers) == [0, 1]
    assert cfg.method.positions == "all" and cfg.method.control == "per_corpus"
    assert cfg.train.max_steps == 80 and cfg.train.batch_size == 4 and cfg.train.scheduler == "constant"
    llama = unlearn_composer("data=wmdp", "method=rmu", "adapter=full", "model=llama3.1")
    assert (llama.method.layer, list(llama.adapter.layers)) == (15, [13, 14, 15])
    assert llama.method.retain_weight == 350.0 and llama.train.lr == 5.0e-5 and llama.train.max_steps == 150
    # RMU on GRUN: the paper's gated RMU
    g = unlearn_composer("data=wmdp", "method=rmu", "adapter=grun", "model=llama3.1")
    assert g.adapter.gate == "mlp" and g.adapter.gate_weight == 100.0 and g.method.steering_coeff == 300.0
    assert g.method.layer == 30 and g.method.positions == "labels" and g.train.epochs == 4
    assert g.train.lr == 4.0e-3 and g.train.batch_size == 16 and list(g.adapter.layers) == [20, 25, 31]
    assert list(unlearn_composer("data=wmdp", "method=rmu").adapter.layers) == [1, 3]  # tiny WMDP recipe
    # the tiny WMDP target learns only the corpora
    ft = composer("data=wmdp")
    assert list(ft.extra_splits) == [] and ft.train.epochs == 6
