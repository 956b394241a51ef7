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
from grun_cli.models.hub import PUBLISHED_LOGS_REPO

log = logging.getLogger(__name__)

LOG_FILE = "TOFU_EVAL.json"


#: OpenUnlearning's published evaluation logs (a Hugging Face dataset): the retain models'
#: per-sample TOFU logs, ``tofu_<model>_<retain split>/TOFU_EVAL.json``.
PUBLISHED_LOG_MODELS = ("Llama-3.1-8B-Instruct", "Llama-3.2-1B-Instruct", "Llama-3.2-3B-Instruct",
                        "Llama-2-7b-chat-hf")
SHORT_PREFIX = "ou:"
RETAIN_FOR_FORGET = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}


def published_log_file(name: str, forget_split: str | None) -> str:
    """``ou:<model>[/<retain split>]`` -> the path of that published TOFU_EVAL.json in the file
    in the Hugging Face cache, downloaded when missing (the retain split follows the forget
    split: forget05 -> retain95)."""
    spec = name[len(SHORT_PREFIX):]
    model, _, retain = spec.partition("/")
    if model not in PUBLISHED_LOG_MODELS:
        raise GrunError(f"eval.retain_logs={name}: OpenUnlearning publishes retain logs for "
                        f"{', '.join(SHORT_PREFIX + m for m in PUBLISHED_LOG_MODELS)}; or give a TOFU_EVAL.json path")
    if not retain:
        retain = RETAIN_FOR_FORGET.get(str(forget_split))
        if retain is None:
            raise GrunError(f"eval.retain_logs={name}: no published retain model for data.forget_split="
                            f"{forget_split}; give {name}/retain99|retain95|retain90 or a path")
    if retain not in RETAIN_FOR_FORGET.values():
        raise GrunError(f"eval.retain_logs={name}: {retain} is not one of {', '.join(RETAIN_FOR_FORGET.values())}")
    filename = f"tofu_{model}_{retain}/{LOG_FILE}"
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(PUBLISHED_LOGS_REPO, filename, repo_type="dataset")
    if isinstance(cached, str):
        return cached
    from grun_cli.models.hub import hub_reachable

    if not hub_reachable():
        raise GrunError(
            f"eval.retain_logs={name} needs {filename} from the Hugging Face dataset {PUBLISHED_LOGS_REPO}, "
            f"unreachable from here: run `huggingface-cli download {PUBLISHED_LOGS_REPO} --repo-type dataset "
            f"--include '{filename}'` where the Hub is reachable and give the file's path")
    log.info("downloading %s from %s (cached by huggingface_hub)", filename, PUBLISHED_LOGS_REPO)
    try:
        return hf_hub_download(PUBLISHED_LOGS_REPO, filename, repo_type="dataset")
    except Exception as e:  # not found, network
        raise GrunError(f"eval.retain_logs={name}: cannot download {filename} from {PUBLISHED_LOGS_REPO}: "
                        f"{str(e).splitlines()[0]}") from e


def read_logs(path: str | Path, forget_split: str | None = None) -> dict[str, Any]:
    """A per-sample log file, a folder holding TOFU_EVAL.json, or a published log by its short
    name (``ou:Llama-3.1-8B-Instruct``: the retain model of ``forget_split``)."""
    if str(path).startswith(SHORT_PREFIX):
        path = published_log_file(str(path), forget_split)
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
    for key in ("enabled", "retain_logs", "batch_size", "gen_batch_size", "log_generations", "attacks",
                "attack_settings"):
        plain["eval"].pop(key, None)
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _plan(cfg: DictConfig) -> Any:
    """The run's target plan (models/resolve.py), or None for configs without a target section."""
    from grun_cli.models.resolve import plan_target

    return plan_target(cfg) if "target" in cfg else None


def retain_logs_setting(cfg: DictConfig, plan: Any = None) -> str | None:
    """The retain logs a run names: ``eval.retain_logs``, else the published logs that go with
    a published TOFU target (``model.tofu.retain_logs``). ``plan``: the run's target plan when
    the caller has it."""
    if cfg.eval.get("retain_logs"):
        return str(cfg.eval.retain_logs)
    published = (cfg.model.get("tofu") or {}).get("retain_logs")
    if not published:
        return None
    plan = plan if plan is not None else _plan(cfg)
    return str(published) if plan is not None and plan.source == "published" else None


def resolve_reference(cfg: DictConfig, evaluate: Callable[[Any], dict[str, Any]],
                      plan: Any = None) -> tuple[dict | None, str]:
    """The retain model's logs and where they came from.

    ``eval.retain_logs`` wins; for a target grun fine-tuned (the tiny model, model=smollm2,
    target.source=finetune) a retain model is fine-tuned with the same recipe (cached) and
    evaluated with ``evaluate(model_cfg)``; otherwise there is none (forget quality is n/a).
    """
    split = cfg.data.get("forget_split")
    plan = plan if plan is not None else _plan(cfg)
    given = retain_logs_setting(cfg, plan)
    if given:
        return read_logs(given, split), given
    if cfg.model.name == "tiny" or (plan is not None and plan.source == "finetune"):
        from grun_cli.io_utils import build_lock
        from grun_cli.models.target import ensure_finetuned, with_checkpoint

        folder = ensure_finetuned(cfg, "retain")
        path = folder / f"eval-{_eval_key(cfg)}" / LOG_FILE
        if not path.is_file():
            with build_lock(path):
                if not path.is_file():
                    log.info("evaluating the %s retain model for the forget-quality reference (cached)", cfg.model.name)
                    write_logs(path, evaluate(with_checkpoint(cfg.model, folder)))
        return read_logs(path), str(path)
    log.warning("forget_quality: no retain-model reference; set eval.retain_logs=<retain model's "
                "TOFU_EVAL.json> (run `grun eval` on a model fine-tuned with split=retain)")
    return None, "none"
