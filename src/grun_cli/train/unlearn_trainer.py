"""The HF Trainer for unlearning: method loss + adapter loss, optimizer over the adapter only."""

from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer

from grun_cli.adapters import Adapter
from grun_cli.adapters.base import capture_block_output
from grun_cli.distributed import average_gradients
from grun_cli.errors import GrunError
from grun_cli.logprobs import sequence_nll
from grun_cli.methods import Method
from grun_cli.train.reference_cache import PREFIX, REF_HIDDEN, REF_LAYER, REF_NLL


class AdapterAccess:
    """ModelAccess for methods, on top of an adapter (edit on / reference)."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    def _start(self, inputs: Mapping[str, Any], read: int | None = None) -> Any:
        """GRUN's cached frozen prefix when the batch has it (and no block below the prefix is
        read: ``read``), else the whole forward."""
        prefix = inputs.get(PREFIX)
        block = self.adapter.prefix_block()
        if prefix is None or block is None or (read is not None and read <= block):
            return contextlib.nullcontext()
        return self.adapter.from_prefix(prefix)

    def forward(self, inputs: Mapping[str, Any], role: str) -> Any:
        with self.adapter.editing(inputs["positions"], role=role), self._start(inputs):
            return self.adapter.model(input_ids=inputs["input_ids"],
                                      attention_mask=inputs["attention_mask"]).logits

    def reference(self, inputs: Mapping[str, Any]) -> Any:
        return self.adapter.reference_logits(inputs)

    def reference_nll(self, inputs: Mapping[str, Any]) -> Any:
        cached = inputs.get(REF_NLL)  # computed once before training (train/reference_cache.py)
        if cached is not None:
            return cached
        return sequence_nll(self.reference(inputs), inputs["labels"])[0]

    def block(self, layer: int | None) -> int:
        """The decoder block a method's ``layer`` setting names (None: the last edited one)."""
        edited = self.adapter.edited_layers()
        if layer is None:
            if not edited:
                raise GrunError(f"method.layer=null means the last block the adapter edits, but adapter="
                                f"{self.adapter.kind} is not restricted to blocks; set method.layer=<block>")
            return edited[-1]
        return int(layer)

    def hidden(self, inputs: Mapping[str, Any], role: str, layer: int | None) -> Any:
        model = self.adapter.model

        layer = self.block(layer)

        def call() -> None:
            with self.adapter.editing(inputs["positions"], role=role), self._start(inputs, read=layer):
                model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])

        # Stop after the block read unless edited blocks lie above it: their gates still run and
        # learn from the gate loss (the official GRUN code reads below its last edited block).
        edited = self.adapter.edited_layers()
        return capture_block_output(model, layer, call, stop=not edited or layer >= edited[-1])

    def reference_hidden(self, inputs: Mapping[str, Any], layer: int | None) -> Any:
        layer = self.block(layer)
        cached = inputs.get(REF_HIDDEN)
        if cached is not None and int(inputs[REF_LAYER][0]) == layer:
            return cached
        return self.adapter.reference_hidden(inputs, layer)


class UnlearnTrainer(Trainer):
    """``loss = warm(step) * method_loss + adapter_aux_loss``; logs every term's mean.

    ``unlearn_warmup_steps`` ramps the method's term linearly from 0 (GRUN's optional
    warm-up, letting the gate learn to separate forget from retain first)."""

    def __init__(self, *args: Any, method: Method, adapter: Adapter, unlearn_warmup_steps: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.method, self.adapter = method, adapter
        self.access = AdapterAccess(adapter)
        self.unlearn_warmup_steps = int(unlearn_warmup_steps)
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)
        self._consumed = 0  # forget items trained on: where the random retain pairing stands

    def create_optimizer(self, model: Any = None) -> Any:
        if self.optimizer is None:
            args = self.args
            self.optimizer = torch.optim.AdamW(
                self.adapter.param_groups(args.weight_decay), lr=args.learning_rate,
                betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
        return self.optimizer

    def training_step(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        loss = super().training_step(model, inputs, *args, **kwargs)
        average_gradients(self.adapter.trainable_parameters())  # a data-parallel launch (distributed.py)
        return loss

    def compute_loss(self, model: Any, inputs: Mapping[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        terms = self.method.loss(inputs, self.access)
        warm = 1.0
        if self.unlearn_warmup_steps > 0:
            warm = min(1.0, self.state.global_step / self.unlearn_warmup_steps)
        total = warm * terms["loss"]
        aux = self.adapter.aux_loss(inputs, self.access.forward)
        if aux:
            total = total + aux["loss"]
        if model.training:
            self._consumed += int(inputs["forget"]["input_ids"].shape[0])
            for name, value in {**{k: v for k, v in terms.items() if k != "loss"},
                                "method_loss": terms["loss"],
                                **{k: v for k, v in aux.items() if k != "loss"}}.items():
                self._sums[name] += float(value.detach())
                self._counts[name] += 1
        return (total, None) if return_outputs else total

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs:
            for name, total in self._sums.items():
                logs[name] = round(total / max(1, self._counts[name]), 6)
            self._sums.clear()
            self._counts.clear()
        super().log(logs, *args, **kwargs)

    # -- checkpoints: only what training changes, and the sums a resumed run must continue --
    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
        from safetensors.torch import save_file

        folder = Path(output_dir or self.args.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.adapter.checkpoint_state().items()},
                  str(folder / TRAINED_FILE))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        from safetensors.torch import load_file

        self.adapter.load_checkpoint_state(load_file(os.path.join(resume_from_checkpoint, TRAINED_FILE)))

    def running_sums(self) -> dict[str, Any]:
        return {"sums": dict(self._sums), "counts": dict(self._counts), "consumed": self._consumed}

    def restore_sums(self, saved: Mapping[str, Any]) -> None:
        self._sums.update({k: float(v) for k, v in (saved.get("sums") or {}).items()})
        self._counts.update({k: int(v) for k, v in (saved.get("counts") or {}).items()})
        self._consumed = int(saved.get("consumed") or 0)
        fast_forward = getattr(self.train_dataset, "fast_forward", None)
        if fast_forward is not None:
            fast_forward(self._consumed)


TRAINED_FILE = "trained.safetensors"
