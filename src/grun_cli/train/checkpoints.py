"""Checkpoints that let a killed run continue to exactly the result it would have reached.

A checkpoint is the HF Trainer's folder (the trained weights, optimizer, scheduler, RNG states,
trainer_state.json) plus grun's manifest, written last: the sha256 of every file, the step, and
the running sums HF does not save (its loss accumulator since the last log, grun's per-term
sums, the number of data items consumed, which positions the random retain pairing). A folder
without a manifest, or whose files no longer match it, is not a checkpoint.

Checkpoints are written every ``train.save_steps`` optimizer steps and then also at the last step
(kept until the run is complete, so a run stopped during its evaluation resumes without training
again), and whatever ``save_steps`` says when SIGINT / SIGTERM arrives during training (the step
finishes first). A complete run deletes them.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from grun_cli.errors import GrunError
from grun_cli.integrity import digests
from grun_cli.interrupts import Interrupted, StopRequest, finish_step_first
from grun_cli.io_utils import atomic_write_json
from grun_cli.train.manifest import MANIFEST, PREFIX, TRAINER_DIR, latest, read_manifest

log = logging.getLogger(__name__)

__all__ = ["MANIFEST", "PREFIX", "TRAINER_DIR", "Checkpointing", "drop_checkpoints", "latest", "read_manifest",
           "resume_checkpoint", "train"]


class Checkpointing(TrainerCallback):
    """Writes the manifest after each HF checkpoint, asks for a checkpoint at the last step and
    at a stop request, and restores the running sums when training resumes.

    ``bind(trainer)`` before training: the sums live on the trainer."""

    def __init__(self, command: str, stop: StopRequest | None = None, resume_from: Path | None = None,
                 on_stop: bool = True) -> None:
        self.command = command
        self.on_stop = on_stop  # a checkpoint when stopped (not for a sharded run: sharding.py)
        self.stop = stop if stop is not None else StopRequest()
        self.resume_from = resume_from
        self.trainer: Any = None

    def bind(self, trainer: Any) -> Checkpointing:
        self.trainer = trainer
        return self

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.resume_from is None:
            return
        sums = read_manifest(self.resume_from, verify=False)["sums"]  # verified before loading
        t = self.trainer
        t._tr_loss.fill_(float(sums["tr_loss"]))
        t._total_loss_scalar = float(sums["total_loss"])
        t._globalstep_last_logged = int(sums["last_logged_step"])
        t._initial_global_step = 0  # train_loss averages over the whole run, as without the stop
        if hasattr(t, "restore_sums"):
            t.restore_sums(sums.get("grun") or {})
        log.info("resumed from %s at step %d", self.resume_from, state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.stop:
            control.should_save = self.on_stop
            control.should_training_stop = True
        elif state.global_step >= state.max_steps and getattr(args.save_strategy, "value", args.save_strategy) != "no":
            control.should_save = True  # periodic checkpoints on: the last step too (a full 8B one is ~100 GB)

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        folder = Path(args.output_dir) / f"{PREFIX}{state.global_step}"
        t = self.trainer
        sums = {"tr_loss": float(t._tr_loss.item()), "total_loss": float(t._total_loss_scalar),
                "last_logged_step": int(t._globalstep_last_logged)}
        if hasattr(t, "running_sums"):
            sums["grun"] = t.running_sums()
        if not all(math.isfinite(v) for v in sums.values() if isinstance(v, float)):
            log.warning("checkpoint %s holds non-finite running sums", folder)
        files = digests(folder, [f for f in folder.rglob("*") if f.is_file() and f.name != MANIFEST])
        atomic_write_json(folder / MANIFEST, {"command": self.command, "step": state.global_step,
                                              "max_steps": state.max_steps, "sums": sums, "files": files})


def train(trainer: Any, command: str, resume_from: Path | None = None, checkpoints: bool = True) -> Any:
    """``trainer.train()`` with checkpoints; a stop signal during training ends in Interrupted
    (with the step and the checkpoint) after the current step and its checkpoint
    (``checkpoints=False``: none, the periodic ones off in the training arguments too)."""
    if resume_from is not None:
        manifest = read_manifest(resume_from, verify=False)  # verified before loading
        if int(manifest["step"]) >= int(manifest["max_steps"]):
            return _already_trained(trainer, resume_from, manifest)
    with finish_step_first(checkpoint=checkpoints) as stop:
        callback = Checkpointing(command, stop, resume_from, on_stop=checkpoints).bind(trainer)
        trainer.add_callback(callback)
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    if stop:
        step = trainer.state.global_step
        folder = Path(trainer.args.output_dir) / f"{PREFIX}{step}"
        raise Interrupted(int(stop.signum), step=step, checkpoint=str(folder) if (folder / MANIFEST).is_file() else None)
    return result


def resume_checkpoint(cfg: Any, out: Path) -> Path | None:
    """The verified checkpoint a ``resume=`` run continues from (None for a new run)."""
    if not cfg.get("resume"):
        return None
    folder = latest(out)
    if folder is None:  # checked by the CLI before anything loads; the folder changed since
        raise GrunError(f"{out} holds no checkpoint to resume from; start the run again")
    return folder  # its files were checked against the manifest before anything loaded (resume.py)


def drop_checkpoints(out: Path) -> None:
    """A complete run keeps its result, not the state to resume it."""
    shutil.rmtree(Path(out) / TRAINER_DIR, ignore_errors=True)


def _already_trained(trainer: Any, folder: Path, manifest: dict[str, Any]) -> Any:
    """Resume from the last step's checkpoint (the run stopped during its evaluation): load it and
    log what HF logs when training ends, without a step. (HF's own resume at the last step trains
    one step too many: it skips the epoch's trained batches, then runs the rest.)"""
    from transformers.trainer_callback import TrainerState
    from transformers.trainer_utils import TrainOutput

    trainer._load_from_checkpoint(str(folder))
    trainer.state = TrainerState.load_from_json(str(Path(folder) / "trainer_state.json"))
    step = trainer.state.global_step
    sums = manifest["sums"]
    total = float(sums["total_loss"])
    total += float(sums["tr_loss"])  # in HF's order: the loss since the last log, added at the end
    metrics = {"train_runtime": 0.0, "train_samples_per_second": 0.0, "train_steps_per_second": 0.0,
               "total_flos": trainer.state.total_flos, "train_loss": total / max(step, 0.001)}
    trainer.log(dict(metrics))
    log.info("resumed from %s: training had finished (step %d)", folder, step)
    return TrainOutput(step, metrics["train_loss"], metrics)
