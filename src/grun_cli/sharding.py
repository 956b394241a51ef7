"""Sharded data parallelism (FSDP2) for full fine-tuning and LoRA unlearning.

Under ``accelerate launch`` with an FSDP config (``conf/accelerate/fsdp.yaml``,
``fsdp_version: 2``) every process holds a 1/N shard of each parameter, gradient and AdamW
state instead of a whole copy: what lets full fine-tuning of an 8B model run on 80 GB cards
(in pure bfloat16 it took 92 GB on one H200 with the frozen NPO reference, 77 GB without; with
float32 master weights, train/precision.py, its weights, gradients and AdamW states alone are
~128 GB, ~16 GB per GPU over 8).

grun shards the model itself with ``torch.distributed.fsdp.fully_shard`` (each decoder block,
then the whole model) rather than through the HF Trainer: FSDP2 shards the modules in place, so
the methods' several calls of the model per step (forget, retain, reference) go through the
sharded blocks as they are; FSDP's reduce-scatter averages the gradients over the processes.
Before sharding, the cached references are computed on the whole model (train/reference_cache.py);
after training every process gathers the full weights to rank 0, which rebuilds the adapter on a
fresh copy of the target, saves and evaluates it, while the others leave.

Not under sharding: GRUN (its few thousand parameters train in one process), methods that read
a block's hidden states (RMU: they stop the forward early), checkpoints and
``resume=`` (a checkpoint would need every process's shard: ``train.save_steps`` is not used and a
stopped run starts again), a live reference for full fine-tuning (``train.reference=live``, or a
cached one over ``train.reference_max_gb``: its frozen copy would be whole on every process).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from grun_cli.distributed import is_sharded, world_size
from grun_cli.errors import GrunError
from grun_cli.settings import Train

#: set by ``accelerate launch`` for a config with ``distributed_type: FSDP``
ENV = "ACCELERATE_USE_FSDP"


#: this process sharded its model (``shard`` takes ENV out of the environment for accelerate)
_sharded = False


def requested() -> bool:
    """An FSDP launch of several processes."""

    return world_size() > 1 and (_sharded or os.environ.get(ENV, "").lower() == "true")


def check(cfg: Any, adapter_kind: str | None, method: Any = None) -> None:
    """Refuse what sharding cannot run, before anything loads."""
    if not requested():
        return
    version = os.environ.get("FSDP_VERSION", "1")
    if version != "2":
        raise GrunError(f"fsdp_version: {version} in the accelerate config: grun shards with FSDP2 "
                        "(torch.distributed.fsdp.fully_shard); set fsdp_version: 2 (conf/accelerate/fsdp.yaml)")
    if cfg.get("resume"):
        raise GrunError("resume= under FSDP: a sharded run writes no checkpoints yet; start it again")
    if method is not None and "hidden" in getattr(method, "references", {}).values():
        raise GrunError(f"method={method.name} under FSDP: it reads a block's hidden states by stopping the "
                        "forward early, which a sharded forward does not allow; run it in one process "
                        "(or replicated: conf/accelerate/ddp.yaml)")
    if adapter_kind == "full" and str(cfg.train.reference) == "live":
        raise GrunError("train.reference=live with adapter=full under FSDP keeps a whole frozen copy on every "
                        "process; use train.reference=cached (the default)")


def shard(model: Any, master: Any = None) -> Any:
    """Shard ``model`` in place over the launch's processes (each decoder block, then the rest)
    and keep accelerate from wrapping it again (it would add DDP on CPU, or its own FSDP).
    ``master``: float32 master weights of a half-precision model (train/precision.py): FSDP2's
    mixed-precision policy gathers them in the model's dtype and reduces gradients in float32."""
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from grun_cli.adapters.base import decoder_layers

    global _sharded
    _sharded = True
    os.environ.pop(ENV, None)  # the HF Trainer's Accelerator: no FSDP plugin of its own
    device = next(model.parameters()).device
    mesh = init_device_mesh("cuda" if device.type == "cuda" else "cpu", (world_size(),))
    policy = {}
    if master is not None and master.count:
        policy = {"mp_policy": MixedPrecisionPolicy(param_dtype=master.half, reduce_dtype=torch.float32)}
    for block in decoder_layers(model):
        fully_shard(block, mesh=mesh, **policy)
    fully_shard(model, mesh=mesh, **policy)
    model._is_accelerate_prepared = True
    params = list(model.parameters())
    here = sum(p.to_local().numel() if is_sharded(p) else p.numel() for p in params)
    logging.getLogger("grun").info("FSDP: %d processes, this one holds %s of the %s parameter values "
                                   "(and their gradients and optimizer states)", world_size(), f"{here:,}",
                                   f"{sum(p.numel() for p in params):,}")
    return model


def without_checkpoints(train: Train) -> Train:
    """``train`` settings for a sharded run: no periodic checkpoints (said once in the log)."""
    if train.save_steps <= 0:
        return train
    logging.getLogger("grun").info("FSDP: no checkpoints (train.save_steps=%s not used); a stopped sharded run "
                                   "starts again", train.save_steps)
    return train.model_copy(update={"save_steps": 0})


def check_no_frozen_copy(adapter: Any, cfg: Any) -> None:
    """After the caches, in a sharded run: a reference that did not fit its memory bound stays
    live, and for full fine-tuning that is a whole frozen copy on every process."""
    if getattr(adapter, "frozen", None) is not None:
        raise GrunError(f"the cached reference did not fit train.reference_max_gb={cfg.train.reference_max_gb}, "
                        "and a live one under FSDP keeps a whole frozen copy on every process; raise "
                        "train.reference_max_gb")


def gather(model: Any) -> dict[str, Any]:
    """The whole state dict on rank 0 (on the CPU), ``{}`` on the others: every process must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


