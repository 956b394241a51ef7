"""Full fine-tuning (the paper's "vanilla" baselines): every weight trainable, or only the
chosen modules of chosen blocks (RMU's recipe: ``layers=[5, 6, 7]``, ``modules=[mlp.down_proj]``).

Its reference model is a frozen copy, made only when the method reads the reference live
(``train.reference=live``); a cached reference is computed from the model before training."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from grun_cli.adapters.base import Adapter, decoder_layers
from grun_cli.errors import GrunError
from grun_cli.settings import FullSettings


class FullAdapter(Adapter):
    kind = "full"

    @classmethod
    def from_saved(cls, model: Any, saved: Mapping[str, Any], directory: Path, trainable: bool = False) -> FullAdapter:
        """The folder holds the whole fine-tuned model, which ``model`` already is (no base to check)."""
        return cls(model, cls.saved_settings(saved))

    def __init__(self, model: Any, settings: FullSettings) -> None:
        super().__init__(model, settings)
        self.frozen: Any = None
        layers, modules = settings.layers, settings.modules
        self.update_layers: list[int] = []
        if layers is None and not modules:
            model.requires_grad_(True)
            self._freeze(model, list(settings.freeze))
            return
        blocks = decoder_layers(model)
        chosen = list(range(len(blocks))) if layers is None else [layers] if isinstance(layers, int) else list(layers)
        if any(not isinstance(i, int) or not 0 <= i < len(blocks) for i in chosen) or not chosen:
            raise GrunError(f"adapter.layers={chosen}: give decoder blocks among 0..{len(blocks) - 1}")
        model.requires_grad_(False)
        found = 0
        for i in chosen:
            for name, p in blocks[i].named_parameters():
                if not modules or any(name == m or name.startswith(f"{m}.") for m in modules):
                    p.requires_grad_(True)
                    found += 1
        if not found:
            raise GrunError(f"adapter.modules={list(modules)} matches no parameter of blocks {chosen}; "
                            f"names look like {next(iter(dict(blocks[0].named_parameters())))}")
        self.update_layers = sorted(chosen)

    @staticmethod
    def _freeze(model: Any, names: list[str]) -> None:
        """``adapter.freeze``: modules left out of full fine-tuning (the official baselines freeze
        ``lm_head``); with tied embeddings that freezes the input embedding too."""
        modules = dict(model.named_modules())
        for name in names:
            if name not in modules:
                raise GrunError(f"adapter.freeze={names}: the model has no module {name!r}; e.g. lm_head")
            modules[name].requires_grad_(False)

    def prepare(self, needs_reference: bool) -> None:
        if needs_reference and self.frozen is None:
            self.frozen = copy.deepcopy(self.model).eval().requires_grad_(False)

    def next_request(self) -> None:
        self.frozen = None  # a live reference copies the model as it is now at prepare()

    def trainable_parameters(self) -> list[Any]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def edited_layers(self) -> list[int]:
        return self.update_layers

    def reference_model(self) -> tuple[Any, Any]:
        if self.frozen is None:
            raise RuntimeError("FullAdapter.prepare(needs_reference=True) was not called")
        device = next(self.model.parameters()).device
        if next(self.frozen.parameters()).device != device:  # the Trainer moved the model
            self.frozen.to(device)
        return self.frozen, contextlib.nullcontext()

    def starting_model(self) -> tuple[Any, Any]:
        if self.frozen is not None:
            return self.reference_model()
        return self.model, contextlib.nullcontext()  # valid only before training starts

    def save_weights(self, directory: Path) -> None:
        self.model.save_pretrained(str(directory))
