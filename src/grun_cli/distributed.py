"""Several processes, one run: `grun finetune` and `grun unlearn` (full fine-tuning and LoRA)
under ``accelerate launch`` (or torchrun), data-parallel.

Every process trains on its share of each batch and the gradients are averaged across
processes before each optimizer step, so ``train.batch_size`` stays the batch of one optimizer
step (split evenly over the processes) and a run follows one process's loss trajectory. The
main process (rank 0) alone writes the run folder, logs to W&B and evaluates; the others
train and leave. Hydra gives the others a throw-away folder, so they never leave a
half-written run behind.

    accelerate launch --config_file conf/accelerate/ddp.yaml --num_processes 2 -m grun_cli unlearn adapter=full

Each process holds a whole copy here; ``conf/accelerate/fsdp.yaml`` shards it (sharding.py).

GRUN trains a few thousand parameters on a frozen base: it runs in one process, and a base
too big for one device is spread over several with ``model.device_map=auto``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

from grun_cli.errors import GrunError

#: the commands that train data-parallel; the others run in one process
COMMANDS = ("finetune", "unlearn")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def launch_overrides(command: str, overrides: Sequence[str]) -> list[str]:
    """``overrides`` for this process: unchanged in one process; the other ranks of a
    multi-process launch run in a throw-away folder without W&B (rank 0 writes the run)."""
    if world_size() == 1:
        return list(overrides)
    if command not in COMMANDS:
        raise GrunError(f"grun {command} runs in one process; launch it without accelerate/torchrun "
                        f"(data-parallel launches: grun {' / grun '.join(COMMANDS)})")
    import torch

    if not torch.cuda.is_available():  # CPU processes: accelerate joins them over gloo only when told
        os.environ["ACCELERATE_USE_CPU"] = "true"
    if is_main():
        return list(overrides)
    import atexit
    import shutil
    import tempfile

    scratch = tempfile.mkdtemp(prefix=f"grun-rank{rank()}-")
    atexit.register(shutil.rmtree, scratch, True)
    return [*overrides, f"hydra.run.dir={scratch}", "hydra.output_subdir=null", "logger=none"]


def check(cfg: Any, adapter_kind: str | None = None) -> None:
    """Refuse what data parallelism cannot run, before anything loads."""

    n = world_size()
    if n > 1 and os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        raise GrunError("a DeepSpeed launch: grun shards with FSDP2 instead (the same sharding as ZeRO-3): "
                        "accelerate launch --config_file conf/accelerate/fsdp.yaml ...")
    if n > 1 and adapter_kind == "grun":
        raise GrunError(f"adapter=grun under {n} processes: GRUN trains a small edit on a frozen model, in one "
                        "process; spread a base too big for one device with model.device_map=auto instead")
    if n > 1 and cfg.model.get("device_map"):
        raise GrunError(f"model.device_map={cfg.model.device_map} under {n} processes: each process holds a whole "
                        "replica in data-parallel training; drop device_map, or run one process with it")
    per = per_process_batch(cfg.train.batch_size)
    if n > 1:
        import logging

        logging.getLogger("grun").info("data-parallel: process %d of %d, %d of each batch of %s", rank() + 1, n,
                                       per, cfg.train.batch_size)


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. loads a checkpoint, building nothing), the others
    after it: one process at a time touches shared caches."""
    if world_size() == 1:
        yield
        return
    from accelerate import PartialState

    with PartialState().main_process_first():
        yield


def average_gradients(parameters: Sequence[Any]) -> None:
    """Sum each gradient over the processes and divide by their number (what DDP does; done
    by hand because methods call the unwrapped model several times per step)."""
    import torch.distributed as dist

    if world_size() == 1 or not dist.is_initialized():
        return

    for p in parameters:
        if p.grad is not None and not is_sharded(p.grad):  # FSDP averaged its shards already
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(world_size())


def per_process_batch(batch_size: int) -> int:
    """train.batch_size split over the processes of a data-parallel launch (distributed.py)."""
    batch, n = int(batch_size), world_size()
    if batch % n:
        raise GrunError(f"train.batch_size={batch} does not split over {n} processes; give a multiple of {n} "
                        "(it is the batch of one optimizer step, across processes)")
    return batch // n


def is_sharded(tensor: Any) -> bool:
    """Whether a parameter or gradient is an FSDP2 shard (a DTensor)."""
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)
