"""LoRA through PEFT (the paper's baseline: rank 4, alpha 32, dropout 0.05, all linear layers).

The reference model is the same network with the adapter disabled."""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from grun_cli.adapters.base import Adapter, check_base
from grun_cli.settings import LoraSettings


@contextlib.contextmanager
def _peft_quiet() -> Iterator[None]:
    """peft asks the model ``is_gradient_checkpointing``, which transformers 5 deprecates with a
    FutureWarning on every LoRA run; the name is peft's to change, not the user's."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


class LoraAdapter(Adapter):
    kind = "lora"
    continuing = False  # a later request of a sequence: training goes on from this LoRA
    frozen: Any = None  # its live reference (a frozen copy), made at prepare()

    def __init__(self, model: Any, settings: LoraSettings) -> None:
        from peft import LoraConfig, get_peft_model

        super().__init__(model, settings)
        target = settings.target_modules
        config = LoraConfig(
            r=int(settings.rank),
            lora_alpha=float(settings.alpha),
            lora_dropout=float(settings.dropout),
            target_modules=target if isinstance(target, str) else list(target),
            task_type="CAUSAL_LM",
        )
        with _peft_quiet():
            self.model = get_peft_model(model, config)

    def trainable_parameters(self) -> list[Any]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def next_request(self) -> None:
        self.continuing = True
        self.frozen = None

    def prepare(self, needs_reference: bool) -> None:
        """A request after the first starts from the trained LoRA, not the base model: a live
        reference is a frozen copy of the model as it is now (the first request's is the base
        model, the adapter disabled)."""
        if self.continuing and needs_reference and self.frozen is None:
            import copy

            self.frozen = copy.deepcopy(self.model).eval().requires_grad_(False)

    def reference_model(self) -> tuple[Any, Any]:
        if self.frozen is not None:
            return self.frozen, contextlib.nullcontext()
        return self.model, self.disabled()

    def starting_model(self) -> tuple[Any, Any]:
        if self.continuing and self.frozen is None:
            return self.model, contextlib.nullcontext()  # the trained LoRA: valid before training
        return self.reference_model()

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        with self.model.disable_adapter():
            yield

    def save_weights(self, directory: Path) -> None:
        self.model.save_pretrained(str(directory))
        # PEFT keeps target_modules as a set: its saved order follows the per-process string hash,
        # so two identical runs would write different bytes. Sorted, the file is reproducible.
        config = Path(directory) / "adapter_config.json"
        saved = json.loads(config.read_text())
        if isinstance(saved.get("target_modules"), list):
            saved["target_modules"] = sorted(saved["target_modules"])
            config.write_text(json.dumps(saved, indent=2, sort_keys=True))

    @classmethod
    def from_saved(cls, model: Any, saved: Mapping[str, Any], directory: Path, trainable: bool = False) -> LoraAdapter:
        check_base(saved["base_model"], model, directory)
        return cls.load(model, cls.saved_settings(saved), directory, trainable=trainable)

    @classmethod
    def load(cls, model: Any, settings: LoraSettings, directory: Path, trainable: bool = False) -> LoraAdapter:
        from peft import PeftModel

        self = cls.__new__(cls)
        Adapter.__init__(self, model, settings)
        with _peft_quiet():
            self.model = PeftModel.from_pretrained(model, str(directory), is_trainable=trainable)
        return self
