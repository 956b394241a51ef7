"""`grun eval`: TOFU metrics for an unlearn run (edit applied as trained), a finetune run's
checkpoint, or any model; forget quality against a retain model's per-sample logs.

Writes metrics.json (OpenUnlearning's metric names), TOFU_EVAL.json (per-sample logs in
OpenUnlearning's format) and run_card.json (last) into the run directory.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from grun_cli.commands.context import plain_config, run_dir, seed_everything
from grun_cli.data import make_source
from grun_cli.errors import GrunError
from grun_cli.io_utils import atomic_write_json
from grun_cli.models.template import PromptTemplate
from grun_cli.train.run_card import read_run_card, run_card
from grun_cli.train.tracking import Tracker, start_tracking

log = logging.getLogger("grun.eval")


def tofu_evaluation(cfg: DictConfig, out: Path, *, model: Any, tokenizer: Any, source: Any,
                    adapter: Any = None, tracker: Tracker | None = None) -> tuple[dict[str, Any], str]:
    """Evaluate one model on TOFU; write TOFU_EVAL.json into ``out``; return the headline
    metrics (plus gate diagnostics for GRUN) and where the forget-quality reference came from."""
    from grun_cli.eval.gates import gate_report
    from grun_cli.eval.reference import LOG_FILE, resolve_reference, write_logs
    from grun_cli.eval.tofu import Evaluator, eval_sets, summarise

    template = PromptTemplate.from_config(cfg.model.template)
    max_length = int(cfg.model.max_length)
    sets = eval_sets(source, cfg.eval.get("max_rows"))
    log.info("TOFU eval sets: %s", ", ".join(f"{k} {len(v)}" for k, v in sets.items()))
    started = time.time()
    logs = Evaluator(model, tokenizer, template, cfg.eval, max_length, adapter).run(sets)

    def evaluate_reference(model_cfg: Any) -> dict[str, Any]:
        from grun_cli.models.loading import load_model

        ref = load_model(model_cfg, source.tokenizer_corpus, cfg.paths.cache_dir)
        plain_eval = {**OmegaConf.to_container(cfg.eval, resolve=True), "attacks": []}
        return Evaluator(ref.model, ref.tokenizer, template, plain_eval, max_length).run(sets)

    reference, ref_source = resolve_reference(cfg, evaluate_reference)
    metrics: dict[str, Any] = summarise(logs, reference)
    if adapter is not None:
        metrics.update(gate_report(adapter, tokenizer, template, sets))
    metrics["eval_time_s"] = round(time.time() - started, 1)
    write_logs(out / LOG_FILE, logs)
    if tracker is not None:
        tracker.summary({k: v for k, v in metrics.items() if v is not None})
        tracker.table("generations", ["split", "question", "answer", "generation"], [
            [key, v["input"], v["ground_truth"], v["generation"]]
            for key in ("forget", "retain")
            for v in list(logs[f"{key}_Q_A_ROUGE"]["value_by_index"].values())[: int(cfg.eval.log_generations)]
        ])
    return metrics, ref_source


def _adopt_run(cfg: DictConfig, run: Path) -> dict[str, Any]:
    """Take model/data/target settings from a run directory's card."""
    card = read_run_card(run)
    if card.get("command") not in ("unlearn", "finetune"):
        raise GrunError(f"run={run} is a `grun {card.get('command')}` run; give a `grun unlearn` or "
                        "`grun finetune` run directory")
    if card["command"] == "finetune" and not card.get("checkpoint"):
        raise GrunError(f"run={run} saved no checkpoint (save_model=false); nothing to evaluate")
    with open_dict(cfg):
        cfg.data = OmegaConf.create(card["config"]["data"])
        cfg.model = OmegaConf.create(card["config"]["model"])
        if "target" in card["config"]:
            cfg.target = OmegaConf.create(card["config"]["target"])
        if card["command"] == "finetune":
            cfg.model.name_or_path = card["checkpoint"]
    log.info("evaluating the %s run %s (its model and data settings)", card["command"], run)
    return card


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    from grun_cli.models.loading import load_model
    from grun_cli.models.target import ensure_target

    out = run_dir()
    started = time.time()
    seed_everything(cfg.seed)
    card = None
    adapter = None
    if cfg.run:
        card = _adopt_run(cfg, Path(str(cfg.run)))
    source = make_source(cfg.data, data_root=cfg.paths.data_dir)
    if card is not None and card["command"] == "unlearn":
        from grun_cli.api import load_run

        loaded_run = load_run(cfg.run)
        model, tokenizer, adapter = loaded_run.model, loaded_run.tokenizer, loaded_run.adapter
        described = {"run": str(cfg.run), "adapter": adapter.kind}
    else:
        loaded = load_model(ensure_target(cfg), source.tokenizer_corpus, cfg.paths.cache_dir)
        model, tokenizer = loaded.model, loaded.tokenizer
        described = loaded.describe()
    config = plain_config(cfg)
    tracker = start_tracking(cfg.logger, out, config, job_type="eval", name=out.name)
    try:
        metrics, ref_source = tofu_evaluation(cfg, out, model=model, tokenizer=tokenizer, source=source,
                                              adapter=adapter, tracker=tracker)
        atomic_write_json(out / "metrics.json", metrics)
        atomic_write_json(out / "run_card.json", run_card(
            "eval", config, status="complete", model=described, forget_quality_reference=ref_source,
            data={"source": source.describe(), "forget_split": source.forget_split},
            metrics=metrics, wall_time_s=round(time.time() - started, 1)))
    except BaseException:
        tracker.finish(exit_code=1)
        raise
    tracker.finish()
    from grun_cli.eval.tofu import table

    print(table(metrics))
    print(f"run directory: {out}  (per-sample logs: {out / 'TOFU_EVAL.json'})")
    return metrics
