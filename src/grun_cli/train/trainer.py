"""HF Trainer setup shared by commands: arguments from config, NaN guard, QA datasets."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from transformers import TrainerCallback

from grun_cli.errors import GrunError
from grun_cli.eval.likelihood import pad_batch

log = logging.getLogger(__name__)


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


class QACollator:
    """Right-pads encoded QA features; labels are already masked on the prompt."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        batch = pad_batch([{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features], self.pad_id)
        return batch


def per_process_batch(train_cfg: Mapping[str, Any]) -> int:
    """train.batch_size split over the processes of a data-parallel launch (distributed.py)."""
    from grun_cli.distributed import world_size

    batch, n = int(train_cfg["batch_size"]), world_size()
    if batch % n:
        raise GrunError(f"train.batch_size={batch} does not split over {n} processes; give a multiple of {n} "
                        "(it is the batch of one optimizer step, across processes)")
    return batch // n


def training_arguments(train_cfg: Mapping[str, Any], output_dir: str, report_to: list[str], seed: int) -> Any:
    from transformers import TrainingArguments

    betas = list(train_cfg.get("adam_betas") or [0.9, 0.999])
    warmup = train_cfg.get("warmup", 0)
    if isinstance(warmup, float) and not 0 <= warmup < 1:
        raise GrunError(f"train.warmup={warmup}: give a fraction in [0, 1) or a whole number of steps")
    for key in ("lr", "batch_size", "grad_accum"):
        if float(train_cfg[key]) <= 0:
            raise GrunError(f"train.{key} must be positive, got {train_cfg[key]}")
    save_steps = int(train_cfg.get("save_steps") or 0)  # 0: checkpoints only when stopped
    return TrainingArguments(
        output_dir=output_dir,
        learning_rate=float(train_cfg["lr"]),
        num_train_epochs=float(train_cfg["epochs"]),
        max_steps=int(train_cfg.get("max_steps", -1)),
        per_device_train_batch_size=per_process_batch(train_cfg),
        gradient_accumulation_steps=int(train_cfg["grad_accum"]),
        warmup_steps=warmup,
        lr_scheduler_type=str(train_cfg.get("scheduler", "linear")),
        weight_decay=float(train_cfg.get("weight_decay", 0.0)),
        adam_beta1=float(betas[0]),
        adam_beta2=float(betas[1]),
        max_grad_norm=float(train_cfg.get("max_grad_norm", 1.0)),
        optim="adamw_torch",
        logging_steps=int(train_cfg.get("logging_steps", 10)),
        logging_first_step=True,
        logging_nan_inf_filter=False,
        save_strategy="steps" if save_steps > 0 else "no",
        save_steps=save_steps if save_steps > 0 else 500,
        save_total_limit=2,  # the newest is written before the older one is dropped
        report_to=report_to,
        seed=seed,
        data_seed=seed,
        bf16=bool(train_cfg.get("bf16", False)),
        fp16=bool(train_cfg.get("fp16", False)),
        gradient_checkpointing=bool(train_cfg.get("gradient_checkpointing", False)),
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
