"""Full fine-tuning on QA pairs with the answer-only loss (`grun finetune`'s engine): TOFU target
models (split=full) and retain models (split=retain), also built on first use by `grun unlearn`
(models/target.py). Writes checkpoint/ (HF format, reloadable with from_pretrained),
train_log.jsonl, metrics.json (with a memorisation check) and run_card.json — the run card
last, so its presence marks a complete run.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from grun_cli.data import make_source
from grun_cli.data.source import fingerprint
from grun_cli.errors import GrunError
from grun_cli.io_utils import atomic_dir, atomic_write_text
from grun_cli.models.loading import load_model
from grun_cli.models.template import PromptTemplate
from grun_cli.runtime import plain_config, seed_everything
from grun_cli.settings import Train
from grun_cli.train.precision import keep_updates
from grun_cli.train.run_card import record_run
from grun_cli.train.tracking import Tracker, start_tracking, tracked

log = logging.getLogger("grun.finetune")


def run_finetune(cfg: DictConfig, train_settings: Train, out: Path, track: bool = True) -> dict[str, Any]:
    """Fine-tune per ``cfg`` (``train_settings``: its ``train`` group, validated) and write
    checkpoint/, metrics.json and run_card.json into ``out``.

    Also used to build cached tiny targets for `grun unlearn` (track=False: no W&B run).
    """
    started = time.time()
    config = plain_config(cfg)
    seed_everything(cfg.seed)

    source = make_source(cfg.data, data_root=cfg.paths.data_dir)
    split = source.resolve(str(cfg.split))  # a wrong split fails before the trainer's imports

    from transformers import Trainer

    from grun_cli.train.checkpoints import drop_checkpoints, resume_checkpoint, train
    from grun_cli.train.trainer import NaNGuard, QACollator, quiet_progress, training_arguments

    main_rows = source.rows(split)
    extra_rows = [r for s in cfg.extra_splits for r in source.rows(str(s))]
    rows = main_rows + extra_rows
    authors = sorted({r["author"] for r in main_rows if r.get("author") is not None})
    log.info("data: %s, split %s: %d rows from %d authors, + %d rows from %s",
             source.describe(), split, len(main_rows), len(authors), len(extra_rows),
             list(cfg.extra_splits) or "no extra splits")

    from grun_cli import distributed, sharding

    distributed.check(cfg)
    sharding.check(cfg, None)
    with distributed.main_first():
        loaded = load_model(cfg.model, source.tokenizer_corpus, cfg.paths.cache_dir)
    model, tokenizer = loaded.model, loaded.tokenizer
    template = PromptTemplate.for_model(cfg.model)
    max_length = int(cfg.model.max_length)
    train_ds = [source.encode_for_training(tokenizer, template, r, max_length) for r in rows]

    tracker = (start_tracking(cfg.logger, out, config, job_type="finetune", name=out.name)
               if track else Tracker())
    master = keep_updates(model, train_settings)
    sharded = sharding.requested()
    if sharded:
        sharding.shard(model, master)
    args = training_arguments(sharding.without_checkpoints(train_settings) if sharded else train_settings,
                              str(out / "trainer"), tracker.report_to, int(cfg.seed), autocast=master.autocast)
    trainer = quiet_progress(Trainer(model=model, args=args, train_dataset=train_ds,
                                     data_collator=QACollator(tokenizer.pad_token_id), callbacks=[NaNGuard()]))
    log.info("fine-tuning %s (%.2fM parameters) on %d examples for %s",
             loaded.source, loaded.describe()["parameters"] / 1e6, len(train_ds),
             f"{args.max_steps} steps" if args.max_steps > 0 else f"{args.num_train_epochs:g} epochs")
    with tracked(tracker):
        result = train(trainer, "finetune", resume_checkpoint(cfg, out), checkpoints=not sharded)
        if not sharded:  # a sharded run's rank 0 loads the gathered weights into a fresh model in its dtype
            master.restore()
        if sharded:  # every process sends its shards; rank 0 goes on with a whole copy
            state = sharding.gather(model)
            if distributed.is_main():
                model = load_model(cfg.model, source.tokenizer_corpus, cfg.paths.cache_dir).model
                model.load_state_dict(state)
        if not distributed.is_main():  # a data-parallel launch: rank 0 checks and writes the run
            return {}
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        metrics: dict[str, Any] = {
            "train_loss_final": losses[-1] if losses else None,
            "train_loss_mean": result.training_loss,
            "train_steps": trainer.state.global_step,
            "train_examples": len(train_ds),
        }
        metrics.update(source.training_check(model, tokenizer, template, main_rows, cfg.check, max_length))
        metrics["wall_time_s"] = round(time.time() - started, 1)
        if any(isinstance(v, float) and v != v for v in metrics.values()):
            raise GrunError(f"training produced NaN metrics {metrics}; lower train.lr")
        checkpoint = None
        if cfg.save_model:
            with atomic_dir(out / "checkpoint") as tmp:
                model.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
            checkpoint = str(out / "checkpoint")
        atomic_write_text(out / "train_log.jsonl",  # the loss trajectory, as grun unlearn writes it
                          "".join(json.dumps(h, sort_keys=True) + "\n" for h in trainer.state.log_history))
        record_run(
            out, "finetune", config, metrics, tracker=tracker, wall_time_s=metrics["wall_time_s"],
            checkpoint=checkpoint, base_model=loaded.describe(), precision=master.describe(),
            data={"source": source.describe(), "split": split, "extra_splits": list(cfg.extra_splits),
                  "rows": len(rows), "authors": authors, "fingerprint": fingerprint(rows)})
        drop_checkpoints(out)
    return metrics
