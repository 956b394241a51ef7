"""Full fine-tuning: every weight trainable (the paper's "vanilla" baselines).

Its reference model is a frozen copy, made only when the method needs one."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from grun_cli.adapters.base import Adapter


class FullAdapter(Adapter):
    kind = "full"

    def __init__(self, model: Any, cfg: Mapping[str, Any]) -> None:
        super().__init__(model, cfg)
        model.requires_grad_(True)
        self.frozen: Any = None

    def prepare(self, needs_reference: bool) -> None:
        if needs_reference and self.frozen is None:
            self.frozen = copy.deepcopy(self.model).eval().requires_grad_(False)

    def trainable_parameters(self) -> list[Any]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def reference_logits(self, inputs: Mapping[str, Any]) -> Any:
        import torch

        if self.frozen is None:
            raise RuntimeError("FullAdapter.prepare(needs_reference=True) was not called")
        device = next(self.model.parameters()).device
        if next(self.frozen.parameters()).device != device:  # the Trainer moved the model
            self.frozen.to(device)
        with torch.no_grad():
            return self.frozen(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits

    def save_weights(self, directory: Path) -> None:
        self.model.save_pretrained(str(directory))
