"""HF Trainer setup shared by commands: arguments from config, NaN guard, QA datasets."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from grun_cli.distributed import per_process_batch
from grun_cli.errors import GrunError
from grun_cli.scoring.likelihood import pad_batch
from grun_cli.settings import Train

log = logging.getLogger(__name__)
STEPS_LOG = logging.getLogger("grun.steps")  # the run's log file only (conf/hydra/default.yaml)


class NaNGuard(TrainerCallback):
    """Stop with a clear error as soon as the logged loss or gradient norm is not finite.

    Needs ``logging_nan_inf_filter=False``: the Trainer otherwise logs a stand-in for NaN losses.
    """

    def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, float] | None = None, **kw: Any) -> None:
        for key in ("loss", "grad_norm"):
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(float(value)):
                raise GrunError(
                    f"training {key} became {value} at step {state.global_step}; lower train.lr, "
                    "check model.dtype (bfloat16 on CPU is fragile) or the data"
                )


class QuietProgress(ProgressCallback):
    """The training progress bar with the loss (and, for GRUN, the forget / retain gate means)
    beside it, instead of HF's raw dict of every logged step printed around the bar; those dicts
    go to the run's log file (logger ``grun.steps``: conf/hydra/default.yaml sends it to the file
    only) and, at the end, to train_log.jsonl."""

    def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None, **kw: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        if STEPS_LOG.handlers:  # a run's job logging sends them to its file; elsewhere (a sweep's target,
            # built before the first trial under Hydra's own logging) they would reach the terminal
            STEPS_LOG.info("step %s %s", state.global_step, {k: v for k, v in logs.items() if k != "total_flos"})
        if self.training_bar is None or "loss" not in logs:
            return
        shown = {"loss": f"{float(logs['loss']):.4g}"}
        if "gate_forget" in logs and "gate_retain" in logs:
            shown["gate f/r"] = f"{float(logs['gate_forget']):.2f}/{float(logs['gate_retain']):.2f}"
        self.training_bar.set_postfix(shown, refresh=False)


def quiet_progress(trainer: Any) -> Any:
    """Swap HF's progress callback for QuietProgress on ``trainer``."""
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(QuietProgress())
    return trainer


class QACollator:
    """Right-pads encoded QA features; labels are already masked on the prompt."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        batch = pad_batch([{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features], self.pad_id)
        return batch


def _accelerator() -> bool:
    import torch

    return torch.cuda.is_available()


def training_arguments(train: Train, output_dir: str, report_to: list[str], seed: int,
                       autocast: str | None = None) -> Any:
    """HF TrainingArguments from the validated ``train`` settings. ``autocast`` (``bf16`` /
    ``fp16``): the half-precision compute that float32 master weights of a half-precision model
    need (train/precision.py), on top of ``train.bf16``."""
    from transformers import TrainingArguments

    save_steps = train.save_steps  # 0: checkpoints only when stopped
    bf16, fp16 = train.bf16 or autocast == "bf16", autocast == "fp16"
    return TrainingArguments(
        output_dir=output_dir,
        learning_rate=float(train.lr),
        num_train_epochs=float(train.epochs),
        max_steps=int(train.max_steps),
        per_device_train_batch_size=per_process_batch(train.batch_size),
        gradient_accumulation_steps=int(train.grad_accum),
        warmup_steps=train.warmup,
        lr_scheduler_type=str(train.scheduler),
        weight_decay=float(train.weight_decay),
        adam_beta1=float(train.adam_betas[0]),
        adam_beta2=float(train.adam_betas[1]),
        max_grad_norm=float(train.max_grad_norm),
        optim="adamw_torch",
        logging_steps=int(train.logging_steps),
        logging_first_step=True,
        logging_nan_inf_filter=False,
        save_strategy="steps" if save_steps > 0 else "no",
        save_steps=save_steps if save_steps > 0 else 500,
        save_total_limit=2,  # the newest is written before the older one is dropped
        report_to=report_to,
        seed=seed,
        data_seed=seed,
        bf16=bf16,
        fp16=fp16,
        # half-precision autocast without a GPU: transformers wants use_cpu said (bf16 autocast on CPU)
        use_cpu=(bf16 or fp16) and not _accelerator(),
        activation_checkpointing=train.gradient_checkpointing,  # transformers 5's name
        dataloader_pin_memory=_accelerator(),  # pinned host memory only helps a copy to a GPU
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
