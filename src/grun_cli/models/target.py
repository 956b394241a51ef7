"""The model to unlearn. For `tiny` without a checkpoint, fine-tune one on the run's data
(through `grun finetune`'s own code) and cache it, so `grun unlearn` works with no files."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from grun_cli.errors import GrunError
from grun_cli.interrupts import Interrupted
from grun_cli.io_utils import build_lock, publish_dir
from grun_cli.models.packaged import weights_id
from grun_cli.models.template import PromptTemplate

log = logging.getLogger(__name__)

#: Keys of the finetune config that do not change the trained weights.
_NOT_IN_RECIPE = ("logger", "paths", "check", "save_model", "hydra")


def finetune_config(cfg: DictConfig, split: str = "full") -> DictConfig:
    """`grun finetune`'s config for a tiny model of this run's data: the tiny recipe on the
    same data (same forget split and author subset) and model, on ``split`` (full = the
    target, retain = the retain model), plus ``target.overrides``."""
    from hydra import compose

    overrides = [f"model={cfg.model.name}", f"data={cfg.data.name}", "logger=none", f"split={split}",
                 *[str(o) for o in cfg.target.overrides]]
    ft = compose("finetune", overrides=overrides)
    ft.data = cfg.data
    if cfg.model.name == "tiny":  # from the tiny base, whatever checkpoint the run names
        ft.model = OmegaConf.merge(cfg.model, {"name_or_path": None, "revision": None})
    else:  # from the base model the run names (target.source=finetune)
        ft.model = cfg.model
    ft.paths = cfg.paths
    return ft


def recipe_hash(ft: DictConfig) -> str:
    plain = OmegaConf.to_container(ft, resolve=True)
    for key in _NOT_IN_RECIPE:
        plain.pop(key, None)
    for key in ("grun_layers", "rmu", "device", "device_map", "tofu", "default_data", "num_layers"):  # not changing the trained weights
        plain["model"].pop(key, None)
    if plain["model"].get("templates"):  # the template chosen, not the ones offered
        plain["model"]["template"] = dataclasses.asdict(PromptTemplate.for_model(plain["model"]))
    plain["model"].pop("templates", None)
    if "offline_copy" in plain["model"]:  # Hub or packaged weights: which one this base really is
        plain["model"]["weights"] = weights_id(plain["model"]) or "hub"
        plain["model"].pop("offline_copy")
    else:  # no packaged copy: the one set of weights, whatever model.weights says
        plain["model"].pop("weights", None)
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]


def ensure_finetuned(cfg: DictConfig, split: str) -> Path:
    """Folder of the cached model fine-tuned on ``split`` of this run's data (built on first use
    with `grun finetune`'s code): checkpoint/, metrics.json, run_card.json.

    The build happens in ``.<key>.building/`` beside it and is renamed into place when complete.
    A stop signal during training leaves that folder with a checkpoint (and so do the recipe's
    periodic ones, ``train.save_steps``), and the next build of the same recipe continues from
    it: a SmolLM2 target is ~25 minutes of CPU, a paper-scale one GPU hours."""
    from grun_cli.settings import Train, parse
    from grun_cli.train.finetune import run_finetune

    ft = finetune_config(cfg, split)
    folder = Path(cfg.paths.cache_dir).expanduser() / "finetuned" / recipe_hash(ft)
    what = f"{cfg.model.name} {'target' if split == 'full' else split} model"
    if (folder / "run_card.json").is_file():
        log.info("%s: reusing %s", what, folder)
        return folder
    from grun_cli.distributed import world_size

    if world_size() > 1:
        raise GrunError(f"the {what} for this data is not cached yet ({folder}); build it in one "
                        "process first (the same grun command without accelerate launch), then relaunch")
    with build_lock(folder):
        if (folder / "run_card.json").is_file():  # another process built it while this one waited
            log.info("%s: reusing %s", what, folder)
            return folder
        building = folder.with_name(f".{folder.name}.building")
        checkpoint = _resumable(building)
        if checkpoint is None:
            shutil.rmtree(building, ignore_errors=True)
            log.info("no %s for this data yet: fine-tuning one into %s (cached)", what, folder)
        else:
            log.info("%s: continuing the stopped build from %s", what, checkpoint)
            ft.resume = str(building)
        building.mkdir(parents=True, exist_ok=True)
        try:
            run_finetune(ft, parse(Train, OmegaConf.to_container(ft.train, resolve=True), "train"), building,
                         track=False)
        except Interrupted as e:
            if e.checkpoint is None:
                shutil.rmtree(building, ignore_errors=True)
                raise
            raise Interrupted(e.signum, e.step, then=f"the {what} keeps its checkpoint at step {e.step}: the same "
                              "command continues its build from there") from None
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        publish_dir(building, folder)
    return folder


def _resumable(building: Path) -> Path | None:
    """The newest intact `grun finetune` checkpoint of a cached build that a stop signal ended
    (it continues to the weights an unbroken build reaches: tests/test_resume.py), else None."""
    from grun_cli.train.manifest import latest, read_manifest

    checkpoint = latest(building)
    if checkpoint is None:
        return None
    try:
        if read_manifest(checkpoint).get("command") == "finetune":
            return checkpoint
    except GrunError as e:  # a damaged checkpoint of the cache's own: build again
        log.warning("%s; building from the start", e)
    return None


def with_checkpoint(model_cfg: Any, folder: Path) -> Any:
    model = OmegaConf.to_container(model_cfg, resolve=True)
    model["name_or_path"] = str(folder / "checkpoint")
    return OmegaConf.create(model)


def ensure_target(cfg: DictConfig, plan: Any = None) -> Any:
    """The model config to load, as models/resolve.py plans it (``plan``: the run's plan, when
    the caller made it): ``cfg.model`` itself (a TOFU fine-tune, or any model for WMDP), a
    published TOFU target, or a cached fine-tuned target built on first use (the tiny model, or
    target.source=finetune)."""
    if plan is None:
        from grun_cli.models.resolve import plan_target

        plan = plan_target(cfg)
    if plan.source in ("tiny", "finetune"):
        return with_checkpoint(cfg.model, ensure_finetuned(cfg, "full"))
    if plan.source == "published":
        return OmegaConf.merge(cfg.model, {"name_or_path": plan.target, "revision": None})
    return cfg.model
