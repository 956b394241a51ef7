"""The target and retain models' evaluation, measured once per sweep: the utility bar of the
selection rule is relative to the target model's utility, and the report shows both models
as reference rows. Each is an ordinary `grun eval` run folder under ``<sweep>/references/``
(role target / retain in its run card), cached in the model cache for the tiny model."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from grun_cli.data import make_source
from grun_cli.errors import GrunError
from grun_cli.eval.reference import _eval_key, read_logs
from grun_cli.eval.run import check_evaluation, run_evaluation
from grun_cli.eval.tofu import summarise
from grun_cli.io_utils import atomic_dir
from grun_cli.models.loading import load_model
from grun_cli.models.target import ensure_finetuned, ensure_target
from grun_cli.train.run_card import record_run

log = logging.getLogger(__name__)

REFERENCES = "references"


def _cached(folder: Path) -> bool:
    return (folder / "run_card.json").is_file()


def evaluate_target(cfg: DictConfig, out: Path) -> None:
    """`grun eval`'s evaluation of the run's target model into the folder ``out``."""
    started = time.time()
    source = make_source(cfg.data, data_root=cfg.paths.data_dir)
    check_evaluation(cfg, source)
    model_cfg = ensure_target(cfg)
    loaded = load_model(model_cfg, source.tokenizer_corpus, cfg.paths.cache_dir)
    with atomic_dir(out) as tmp:
        metrics = run_evaluation(cfg, tmp, model=loaded.model, tokenizer=loaded.tokenizer, source=source)
        config = OmegaConf.to_container(cfg, resolve=True)
        record_run(tmp, "eval", config, metrics, wall_time_s=round(time.time() - started, 1), role="target",
                   model=loaded.describe(), evaluation=str(cfg.eval.kind),
                   data={"source": source.describe(), "forget_split": source.forget_split})


def retain_from_logs(cfg: DictConfig, target_dir: Path, out: Path) -> bool:
    """The tiny retain model's row, from the per-sample logs the target's forget quality was
    measured against (the retain model compared with itself: forget quality 1)."""
    ref = json.loads((target_dir / "metrics.json").read_text()).get("forget_quality_reference")
    if not ref or ref == "none" or not Path(ref).is_file():
        return False
    logs = read_logs(ref)
    metrics = {**summarise(logs, logs), "forget_quality_reference": ref}
    with atomic_dir(out) as tmp:
        record_run(tmp, "eval", OmegaConf.to_container(cfg, resolve=True), metrics, role="retain",
                   model={"source": str(Path(ref).parent)}, evaluation="tofu")
    return True


def adopt_target(given: str | Path, target: Path) -> None:
    """``select.target``: a `grun eval` run folder of the target model, measured elsewhere
    (e.g. on a GPU node before a Slurm sweep), copied in as the sweep's target reference."""
    src = Path(given).expanduser()
    if not (src / "metrics.json").is_file() or not (src / "run_card.json").is_file():
        raise GrunError(f"select.target={given}: not a completed `grun eval` run folder (no metrics.json / "
                        "run_card.json); run `grun eval` on the target model first")
    if (src / "FAILED").exists():
        raise GrunError(f"select.target={given}: that evaluation failed; rerun `grun eval` on the target model")
    if src.resolve() != target.resolve():
        shutil.copytree(src, target, dirs_exist_ok=True)


def wanted(cfg: DictConfig, launcher_target: str) -> bool:
    """Whether the sweep's start should evaluate the target itself: ``sweep.references``
    true / false, or auto = yes unless the trials go to Slurm with a model that is not the
    tiny one (then the submitting login node would load it: give select.target instead)."""
    setting = cfg.sweep.references
    if not cfg.eval.enabled or setting is False:
        return False
    if setting == "auto" and "Slurm" in launcher_target and cfg.model.name != "tiny":
        log.warning("Slurm sweep of model=%s: the target is not evaluated on this node; without select.target "
                    "the selection has no utility bar", cfg.model.name)
        return False
    return True


def ensure_references(cfg: DictConfig, sweep_dir: Path) -> dict[str, Path]:
    """``{role: eval run folder}`` for the target (and, for the tiny TOFU model, the retain
    model) in ``<sweep>/references``; reused when present, cached across sweeps for tiny."""
    refs = Path(sweep_dir) / REFERENCES
    target = refs / "target"
    given = OmegaConf.select(cfg, "select.target")  # a sweep's (grun repro's unlearn config has no select)
    if given:
        adopt_target(given, target)
    if not _cached(target):
        cache = None
        if cfg.model.name == "tiny" and not cfg.model.get("name_or_path"):
            cache = ensure_finetuned(cfg, "full") / f"sweep-reference-{_eval_key(cfg)}"
        if cache is not None and _cached(cache):
            log.info("target model's evaluation: reusing %s", cache)
        else:
            log.info("evaluating the target model once for the selection rule's utility bar")
            evaluate_target(cfg, cache or target)
        if cache is not None:
            shutil.copytree(cache, target, dirs_exist_ok=True)
    out = {"target": target}
    retain = refs / "retain"
    if str(cfg.eval.kind) == "tofu" and (_cached(retain) or retain_from_logs(cfg, target, retain)):
        out["retain"] = retain
    return out


def reference_metrics(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}
