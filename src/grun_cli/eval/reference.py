"""Per-sample logs on disk (OpenUnlearning's format) and the retain-model reference that
forget quality is measured against."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from grun_cli.errors import GrunError
from grun_cli.io_utils import atomic_write_json

log = logging.getLogger(__name__)

LOG_FILE = "TOFU_EVAL.json"


def read_logs(path: str | Path) -> dict[str, Any]:
    """A per-sample log file, or a folder holding TOFU_EVAL.json."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / LOG_FILE
    if not p.is_file():
        raise GrunError(f"eval.retain_logs={path}: no such file; give an OpenUnlearning/grun "
                        f"{LOG_FILE} (or the folder holding it)")
    try:
        logs = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise GrunError(f"{p} is not valid JSON ({e.msg} at line {e.lineno})") from e
    if not isinstance(logs, dict) or "forget_truth_ratio" not in logs:
        raise GrunError(f"{p} has no forget_truth_ratio entry; it is not a TOFU per-sample log")
    return logs


def write_logs(path: Path, logs: Mapping[str, Any]) -> None:
    atomic_write_json(path, logs)


def _eval_key(cfg: DictConfig) -> str:
    """What changes a reference log: the eval settings and the data."""
    plain = {"eval": OmegaConf.to_container(cfg.eval, resolve=True),
             "data": OmegaConf.to_container(cfg.data, resolve=True)}
    for key in ("enabled", "retain_logs", "batch_size", "gen_batch_size", "log_generations", "attacks"):
        plain["eval"].pop(key, None)
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:12]


def resolve_reference(cfg: DictConfig, evaluate: Callable[[Any], dict[str, Any]]) -> tuple[dict | None, str]:
    """The retain model's logs and where they came from.

    ``eval.retain_logs`` wins; for the tiny model a retain model is fine-tuned (cached) and
    evaluated with ``evaluate(model_cfg)``; otherwise there is none (forget quality is n/a).
    """
    if cfg.eval.get("retain_logs"):
        return read_logs(cfg.eval.retain_logs), str(cfg.eval.retain_logs)
    if cfg.model.name == "tiny":
        from grun_cli.models.target import ensure_finetuned, with_checkpoint

        folder = ensure_finetuned(cfg, "retain")
        path = folder / f"eval-{_eval_key(cfg)}" / LOG_FILE
        if not path.is_file():
            log.info("evaluating the tiny retain model for the forget-quality reference (cached)")
            write_logs(path, evaluate(with_checkpoint(cfg.model, folder)))
        return read_logs(path), str(path)
    log.warning("forget_quality: no retain-model reference; set eval.retain_logs=<retain model's "
                "TOFU_EVAL.json> (run `grun eval` on a model fine-tuned with split=retain)")
    return None, "none"
