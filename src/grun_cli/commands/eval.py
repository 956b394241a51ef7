"""`grun eval`: evaluate an unlearn run (edit applied as trained), a finetune run's checkpoint,
or any model (the orchestration is grun_cli.eval.run).

``eval=tofu`` (data=tofu / synthetic): TOFU metrics, forget quality against a retain model's
per-sample logs; writes TOFU_EVAL.json (OpenUnlearning's format). ``eval=wmdp`` (data=wmdp):
lm-eval-harness tasks (WMDP-bio, WMDP-cyber, MMLU) batched with the edit active, and the
held-out forget / retain text NLL; writes LM_EVAL.json (lm-eval's per-task results).
Both write metrics.json and run_card.json (last) into the run directory.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from grun_cli.commands.context import run_dir
from grun_cli.data import make_source
from grun_cli.errors import GrunError
from grun_cli.eval.run import check_evaluation, run_evaluation
from grun_cli.models.template import PromptTemplate
from grun_cli.runtime import plain_config, seed_everything
from grun_cli.train.run_card import (
    read_run_card,
    record_run,
    trained_adapter,
)
from grun_cli.train.tracking import start_tracking, tracked

log = logging.getLogger("grun.eval")


def _eval_follows_data(cfg: DictConfig) -> bool:
    """True when eval= was not chosen on the command line (it follows data=)."""
    from hydra.core.hydra_config import HydraConfig

    choices = HydraConfig.get().runtime.choices
    return choices.get("eval") == choices.get("data")


def _eval_for_data(data: str) -> DictConfig:
    """The evaluation config of data set ``data``, with the command line's eval.* overrides."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    mine = [o for o in HydraConfig.get().overrides.task if o.lstrip("+~").startswith("eval.")]
    return compose("evaluate", overrides=[f"data={data}", *mine]).eval


def _refuse_remote_code(run: Path, card: dict[str, Any], trust: bool) -> None:
    """A shared run folder never runs code on its own say: a card asking for remote code, or a
    checkpoint whose config.json maps classes to its own Python files, needs the user's
    explicit model.trust_remote_code=true."""
    from grun_cli.models.loading import REMOTE_CODE_FIX, custom_code

    if trust:
        return
    modules = custom_code(card["checkpoint"]) if card.get("checkpoint") else []
    if modules:
        raise GrunError(f"run={run}: its checkpoint's config.json loads Python code from the folder "
                        f"({', '.join(m + '.py' for m in modules)}); grun does not run it; " + REMOTE_CODE_FIX)
    if card["config"].get("model", {}).get("trust_remote_code"):
        raise GrunError(f"run={run}: its run card asks for trust_remote_code, which a run folder cannot grant; "
                        + REMOTE_CODE_FIX)


def _adopt_run(cfg: DictConfig, run: Path) -> dict[str, Any]:
    """Take model/data/target settings from a run directory's card."""
    card = read_run_card(run)
    if card.get("command") not in ("unlearn", "finetune"):
        raise GrunError(f"run={run} is a `grun {card.get('command')}` run; give a `grun unlearn` or "
                        "`grun finetune` run directory")
    if card["command"] == "finetune" and not card.get("checkpoint"):
        raise GrunError(f"run={run} saved no checkpoint (save_model=false); nothing to evaluate")
    run_data = card["config"]["data"]["name"]
    trust = bool(cfg.model.trust_remote_code)  # the command line's, never the card's
    _refuse_remote_code(run, card, trust)
    with open_dict(cfg):
        if _eval_follows_data(cfg) and run_data != cfg.data.name:  # the run's data set's evaluation
            cfg.eval = _eval_for_data(run_data)
        cfg.data = OmegaConf.create(card["config"]["data"])
        cfg.model = OmegaConf.create(card["config"]["model"])
        if "target" in card["config"]:
            cfg.target = OmegaConf.create(card["config"]["target"])
        if card["command"] == "finetune":
            cfg.model.name_or_path = card["checkpoint"]
        cfg.model.trust_remote_code = trust
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
    check_evaluation(cfg, source, trained_adapter(card))  # before loading any model
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
    with tracked(tracker):
        from grun_cli.unlearning.sequence.requests import Request, author_groups, corpus_groups

        requests = [Request.from_record(r) for r in ((card or {}).get("data") or {}).get("sequence") or []]
        text_requests = any(r.corpora for r in requests)  # a sequence of forget corpora
        groups = author_groups([(r.number, r.authors) for r in requests]) if requests and not text_requests else None
        metrics = run_evaluation(cfg, out, model=model, tokenizer=tokenizer, source=source, adapter=adapter,
                                 tracker=tracker, forget_groups=groups)
        if text_requests:  # a sequence of forget corpora: each request's held-out NLL too
            from grun_cli.scoring.text_nll import corpus_nll

            metrics.update(corpus_nll(model, tokenizer, PromptTemplate.for_model(cfg.model), source,
                                      corpus_groups(requests), int(cfg.model.max_length),
                                      batch_size=int(cfg.eval.nll_batch_size), adapter=adapter))
        record_run(out, "eval", config, metrics, tracker=tracker, wall_time_s=round(time.time() - started, 1),
                   model=described,
                   evaluation=str(cfg.eval.kind),
                   data={"source": source.describe(), "forget_split": source.forget_split})
    _report(metrics, out)
    return metrics


def _report(metrics: dict[str, Any], out: Path) -> None:
    from grun_cli.eval.attacks import attack_table

    where = _report_metrics(metrics, out)
    attacks = attack_table(metrics)
    if attacks:
        print("under attack (eval.attacks; per-sample logs in attacks/<name>/):\n" + attacks)
    print(where)


def _report_metrics(metrics: dict[str, Any], out: Path) -> str:
    """Print the metrics; return the line saying where they are."""
    if "lm_eval_seconds" in metrics:
        from grun_cli.eval.lm_eval_run import table as lm_table

        for name in ("forget", "retain"):
            if f"{name}_text_nll" in metrics:
                print(f"  held-out {name} text NLL: {metrics[f'{name}_text_nll']:.4f} "
                      f"(all tokens {metrics[f'{name}_text_nll_all']:.4f})")
        print(lm_table(metrics))
        print(f"  lm-eval: {metrics['lm_eval_questions_per_s']} questions/s at batch size "
              f"{metrics['lm_eval_batch_size']}; sources: {metrics['lm_eval_task_sources']}")
        return f"run directory: {out}  (lm-eval results: {out / 'LM_EVAL.json'})"
    from grun_cli.eval.attacks import attack_keys
    from grun_cli.eval.tofu import table

    shown = attack_keys(metrics)
    print(table({k: v for k, v in metrics.items() if k not in shown}))
    return f"run directory: {out}  (per-sample logs: {out / 'TOFU_EVAL.json'})"
