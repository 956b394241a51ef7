"""One unlearning run: a base method through an adapter, from the setup to the run folder.

Writes into the run directory: adapter/ (only what was trained + grun_adapter.json naming the
base model), train_log.jsonl, metrics.json (forget/retain answer probability before and
after, gate means for GRUN, the evaluation) and run_card.json — last, so its presence marks a
complete run. Several requests (sequence=, base_run=) go to unlearning/sequence/run.py.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from grun_cli import sharding
from grun_cli.data.source import fingerprint
from grun_cli.errors import GrunError
from grun_cli.io_utils import atomic_write_text
from grun_cli.runtime import plain_config, seed_everything
from grun_cli.settings import Settings
from grun_cli.train.precision import keep_updates
from grun_cli.train.run_card import record_run
from grun_cli.train.tracking import start_tracking, tracked
from grun_cli.unlearning.setup import prepare_caches, setup

log = logging.getLogger("grun.unlearn")


def run_unlearn(cfg: DictConfig, settings: Settings, out: Path) -> dict[str, Any]:
    """The run of ``cfg`` into ``out``; ``settings``: its typed settings (settings_check.read_settings),
    which the method, the adapter and the trainer are made from."""
    from grun_cli.unlearning.sequence.requests import is_sequence

    if is_sequence(cfg) or cfg.get("base_run"):  # several requests, or one more on an earlier run
        from grun_cli.unlearning.sequence.run import run_sequence

        return run_sequence(cfg, settings, out)
    from grun_cli.adapters import make_adapter
    from grun_cli.adapters.base import base_fingerprint
    from grun_cli.eval.gates import gate_report
    from grun_cli.train.checkpoints import drop_checkpoints, resume_checkpoint, train

    started = time.time()
    config = plain_config(cfg)
    s = setup(cfg, settings)
    source, tokenizer, main = s.source, s.tokenizer, s.main
    forget_rows, retain_rows = source.rows("forget"), source.rows("retain")
    log.info("data: %s: forget %s (%d rows), retain %s (%d rows)", source.describe(),
             source.forget_split, len(forget_rows), source.retain_split, len(retain_rows))
    dataset = s.dataset(forget_rows, retain_rows)
    probe_sets = s.probe_sets(forget_rows, retain_rows)
    metrics: dict[str, Any] = s.probe(s.loaded.model, probe_sets, "before_") if main else {}

    base_print = base_fingerprint(s.loaded.model)  # before any adapter touches the model
    seed_everything(cfg.seed)  # the edit's initialisation must not depend on what ran before
    adapter = make_adapter(s.loaded.model, settings.adapter, model_layers=cfg.model.grun_layers)
    caches = prepare_caches(settings, s.method, adapter, dataset, tokenizer.pad_token_id)
    efficiency = adapter.describe()
    master = keep_updates(adapter.model, settings.train)  # after the caches: computed with the model as loaded
    sharded = sharding.requested()
    if sharded:  # after the caches: they are computed on the whole model
        sharding.check_no_frozen_copy(adapter, cfg)
        sharding.shard(adapter.model, master)
    log.info("method %s on adapter %s: %s trainable parameters (%.4f%% of %s)", s.method.name,
             adapter.kind, f"{efficiency['trainable_parameters']:,}", efficiency["trainable_percent"],
             f"{adapter.base_parameters:,}")

    tracker = start_tracking(cfg.logger, out, config, job_type="unlearn", name=out.name)
    trainer = s.trainer(adapter, dataset, out / "trainer", tracker, master)
    from grun_cli.unlearning.steps import (  # transformers: after the checks
        StepEvaluation,
        requested_steps,
    )

    if main and cfg.eval.enabled and requested_steps(cfg):
        trainer.add_callback(StepEvaluation(cfg, out, adapter=adapter, tokenizer=tokenizer, source=source,
                                            plan=s.plan))
    with tracked(tracker):
        train(trainer, "unlearn", resume_checkpoint(cfg, out), checkpoints=not sharded)
        if not sharded:  # a sharded run's rank 0 loads the gathered weights into a fresh model in its dtype
            master.restore()
        if sharded:  # every process sends its shards; rank 0 goes on with a whole model
            state = sharding.gather(adapter.model)
            if main:
                adapter = s.unsharded(state)
        if not main:
            return {}
        metrics.update(s.probe(adapter.model, probe_sets, "after_", adapter=adapter))
        if any(isinstance(v, float) and not math.isfinite(v) for v in metrics.values()):
            raise GrunError(f"unlearning produced non-finite likelihoods; lower train.lr ({metrics})")
        # Save what was trained before evaluating, so an evaluation failure does not lose it
        # (the run is complete only once run_card.json exists).
        base = s.base_record(adapter, base_print)
        s.save_adapter(adapter, out / "adapter", base)
        atomic_write_text(out / "train_log.jsonl",
                          "".join(json.dumps(h, sort_keys=True) + "\n" for h in trainer.state.log_history))
        if cfg.eval.enabled:
            from grun_cli.eval.run import run_evaluation

            metrics.update(run_evaluation(cfg, out, model=adapter.model, tokenizer=tokenizer, source=source,
                                          adapter=adapter, tracker=tracker, text_nll=False, plan=s.plan))  # probed above
        else:  # gate diagnostics on the probe rows (QA) or held-out texts instead of the evaluation sets
            metrics.update(gate_report(adapter, tokenizer, s.template, source.gate_sets(probe_sets),
                                       lambda row: source.gate_prompt(tokenizer, s.template, row, s.max_length),
                                       save_to=out))
        metrics.update(efficiency)
        metrics.update(caches)
        metrics["train_steps"] = trainer.state.global_step
        metrics["wall_time_s"] = round(time.time() - started, 1)
        record_run(
            out, "unlearn", config, metrics, tracker=tracker, wall_time_s=metrics["wall_time_s"],
            adapter=str(out / "adapter"), base_model=base, precision=master.describe(),
            method=s.method.name, adapter_kind=adapter.kind, efficiency=efficiency,
            data={"source": source.describe(), "forget_split": source.forget_split,
                  "retain_split": source.retain_split, "forget_rows": len(forget_rows),
                  "retain_rows": len(retain_rows), "pairing": str(cfg.pairing),
                  "fingerprint": fingerprint(forget_rows + retain_rows), "idk_answers": s.idk_source})
        drop_checkpoints(out)
    return metrics
