"""The Adapter seam: what is trainable, how to switch it off, what it adds to the loss,
and how it is saved — so any method runs on full fine-tuning, LoRA or GRUN unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from grun_cli.errors import GrunError
from grun_cli.integrity import digests, read_json, verify
from grun_cli.settings import ADAPTER_SETTINGS, AdapterSettings, parse

CONFIG_FILE = "grun_adapter.json"


def base_fingerprint(model: Any) -> str:
    """A cheap identity of a base model: its config plus a strided sample of the embedding
    and last-layer weights. Catches loading an adapter onto the wrong checkpoint."""
    import torch

    cfg = model.config.to_dict()
    for volatile in ("_name_or_path", "transformers_version", "torch_dtype", "dtype",
                     "architectures", "use_cache"):
        cfg.pop(volatile, None)
    h = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode())
    params = [p for _, p in model.named_parameters()]
    for p in (params[0], params[-1]):
        flat = p.detach().flatten()
        step = max(1, flat.numel() // 65536)
        h.update(flat[::step].to(torch.float32).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def decoder_layers(model: Any) -> Any:
    """The decoder blocks of a Llama-style model (or a PEFT wrapper of one)."""
    base = model.get_decoder() if hasattr(model, "get_decoder") else model
    layers = getattr(base, "layers", None)
    if layers is None:
        raise GrunError(f"cannot find decoder blocks in {type(model).__name__}; grun supports "
                        "Llama-style models (model.model.layers)")
    return layers


#: the adapter kinds a saved grun_adapter.json may name (adapters.ADAPTERS has their classes)
KINDS = ("grun", "lora", "full")

class _Captured(Exception):
    """Raised by the capture hook to skip the blocks after the one read."""


def capture_block_output(model: Any, layer: int, call: Any, stop: bool = True) -> Any:
    """Run ``call()`` (a forward of ``model``) and return the output of decoder block ``layer``
    as the next block receives it, i.e. after every forward hook on that block (GRUN's edit).
    With ``stop`` the forward ends there: later blocks and the LM head are not computed.

    Hidden states are read by our own hook because transformers' ``output_hidden_states``
    records a block's output before user hooks run (pre-edit values at edited blocks)."""
    blocks = decoder_layers(model)
    if not 0 <= layer < len(blocks):
        raise GrunError(f"layer {layer} does not exist: the model has decoder blocks 0..{len(blocks) - 1}")
    box: dict[str, Any] = {}

    def hook(module: Any, args: Any, output: Any) -> None:
        box["h"] = output[0] if isinstance(output, tuple) else output
        if stop:
            raise _Captured

    handle = blocks[layer].register_forward_hook(hook)
    try:
        call()
    except _Captured:
        pass
    finally:
        handle.remove()
    return box["h"]


def count_parameters(params: Any) -> int:
    return sum(p.numel() for p in params)


class Adapter(ABC):
    """Owns the trainable state of an unlearning run.

    ``model`` is the module to call (for LoRA, the PEFT wrapper). ``editing(positions, role)``
    tells position-aware adapters (GRUN) where to apply their edit during the next forward
    and what the input is (forget / retain) for their auxiliary loss.
    """

    kind: ClassVar[str]

    def __init__(self, model: Any, settings: AdapterSettings) -> None:
        """``settings``: the adapter group, validated (``ADAPTER_SETTINGS[kind]``)."""
        self.model = model
        self.settings = settings
        self.cfg = settings.plain()  # saved in grun_adapter.json (and what a saved adapter is rebuilt from)
        self.base_parameters = count_parameters(model.parameters())

    # -- made and restored (adapters.make_adapter / load_adapter) --------------------------
    @classmethod
    def create(cls, model: Any, settings: AdapterSettings, model_layers: Sequence[int] | None = None) -> Adapter:
        """A new adapter on ``model``; ``model_layers``: the model's default blocks, for an
        adapter that edits chosen blocks."""
        return cls(model, settings)

    @classmethod
    def saved_settings(cls, saved: Mapping[str, Any]) -> AdapterSettings:
        """The settings a saved adapter was made with (its grun_adapter.json's ``config``)."""
        return parse(ADAPTER_SETTINGS[cls.kind], saved["config"], "adapter")

    @classmethod
    def from_saved(cls, model: Any, saved: Mapping[str, Any], directory: Path, trainable: bool = False) -> Adapter:
        """The adapter saved in ``directory`` (``saved``: its grun_adapter.json) back on its base
        model, refusing a different base."""
        check_base(saved["base_model"], model, directory)
        adapter = cls(model, cls.saved_settings(saved))
        adapter.load_weights(directory, trainable=trainable)
        return adapter

    def load_weights(self, directory: Path, trainable: bool = False) -> None:
        """Load the trained tensors saved in ``directory`` (``from_saved``)."""
        raise NotImplementedError(f"{type(self).__name__} has no saved weights to load")

    # -- training ------------------------------------------------------------------------
    @abstractmethod
    def trainable_parameters(self) -> list[Any]:
        """Parameters the optimizer updates."""

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups: decay matrices, never biases or norms."""
        decay, no_decay = [], []
        for p in self.trainable_parameters():
            (decay if p.ndim >= 2 else no_decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay},
                {"params": no_decay, "weight_decay": 0.0}]

    def prepare(self, needs_reference: bool) -> None:  # noqa: B027 - optional hook
        """Called once before training with what the method needs."""

    def next_request(self) -> None:  # noqa: B027 - optional hook
        """Sequential unlearning (LoRA, full): training goes on from the weights as they are, so
        the next request's reference (its starting model) is the model now, not the base."""

    @contextlib.contextmanager
    def editing(self, positions: Any, role: str | None = None, once: bool = False) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """The starting model: the edit switched off."""
        yield

    def reference_model(self) -> tuple[Any, Any]:
        """The module computing the starting model's outputs, and the context to call it in."""
        return self.model, self.disabled()

    def starting_model(self) -> tuple[Any, Any]:
        """``reference_model()`` as it may be called before the first training step, where a
        cached reference is computed (full fine-tuning: the model itself, no frozen copy)."""
        return self.reference_model()

    def reference_logits(self, inputs: Mapping[str, Any], starting: bool = False) -> Any:
        """The starting model's logits, without gradients (``starting``: called before training,
        from ``starting_model()``)."""
        import torch

        model, context = self.starting_model() if starting else self.reference_model()
        with torch.no_grad(), context:
            return model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits

    def reference_hidden(self, inputs: Mapping[str, Any], layer: int, starting: bool = False) -> Any:
        """The starting model's output of decoder block ``layer``, without gradients."""
        import torch

        model, context = self.starting_model() if starting else self.reference_model()
        with torch.no_grad(), context:
            return capture_block_output(model, layer, lambda: model(
                input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]))

    def edited_layers(self) -> list[int]:
        """Decoder blocks this adapter edits or updates ([] = not restricted to blocks)."""
        return []

    def prefix_block(self) -> int | None:
        """The block whose output training can cache and start from (``from_prefix``): only
        adapters that leave everything below their lowest edited block frozen have one."""
        return None

    def from_prefix(self, prefix: Any) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError(f"adapter={self.kind} has no frozen prefix to start from")

    def aux_loss(self, batch: Mapping[str, Any], forward: Any) -> dict[str, Any]:
        """Extra loss terms of the adapter itself (GRUN's gate BCE); {} for none."""
        return {}

    def describe(self) -> dict[str, Any]:
        n = count_parameters(self.trainable_parameters())
        return {"adapter": self.kind, "trainable_parameters": n,
                "trainable_percent": 100.0 * n / max(1, self.base_parameters)}

    # -- checkpoints ---------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        """Everything training changes, by name, exactly as it is (not the saved artifact's form):
        what a checkpoint must hold for a resumed run to continue bit for bit. For GRUN that is
        the orthogonal parametrization's free parameter, not the rotation it computes; its fixed
        base comes back from the seeded initialisation. (Not ``state_dict()``: pyreft's
        interventions override it with a partial one.)"""
        trainable = {id(p) for p in self.trainable_parameters()}
        return {n: p.detach() for n, p in self.model.named_parameters() if id(p) in trainable}

    def load_checkpoint_state(self, tensors: Mapping[str, Any]) -> None:
        """Copy a checkpoint's tensors back in place (the optimizer keeps pointing at them)."""
        import torch

        own = self.checkpoint_state()
        if set(own) != set(tensors):
            missing, extra = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
            raise GrunError(f"the checkpoint does not fit adapter={self.kind} as configured (missing "
                            f"{missing[:3]}, unexpected {extra[:3]}); resume with the run's own settings")
        with torch.no_grad():
            for name, value in own.items():
                if tuple(value.shape) != tuple(tensors[name].shape):
                    raise GrunError(f"the checkpoint's {name} has shape {tuple(tensors[name].shape)}, the adapter "
                                    f"{tuple(value.shape)}; resume with the run's own settings")
                value.copy_(tensors[name])

    # -- artifacts -----------------------------------------------------------------------
    @abstractmethod
    def save_weights(self, directory: Path) -> None:
        """Write only what was trained."""

    def save(self, directory: Path, base: Mapping[str, Any]) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)

        self.save_weights(directory)
        files = digests(directory, [f for f in directory.rglob("*") if f.is_file() and f.name != CONFIG_FILE])
        (directory / CONFIG_FILE).write_text(json.dumps(
            {"kind": self.kind, "config": self.cfg, "base_model": dict(base), "files": files},
            indent=2, default=str) + "\n")


def read_adapter_config(directory: Path) -> dict[str, Any]:
    """The adapter's config, its weight files checked against their checksums."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise GrunError(f"{directory} holds no grun adapter ({CONFIG_FILE} missing); "
                        "pass the adapter/ folder of a `grun unlearn` run")
    saved = read_json(path, "adapter config")
    if saved.get("kind") not in KINDS or not isinstance(saved.get("config"), dict):
        raise GrunError(f"{path} names no adapter kind and config; copy the folder again or rerun it")
    verify(directory, saved.get("files"), CONFIG_FILE)
    return saved


def check_base(saved: Mapping[str, Any], model: Any, directory: Path) -> None:
    """Refuse to put an adapter on a different base model than the one it was trained on."""
    want = saved.get("fingerprint")
    got = base_fingerprint(model)
    if want and want != got:
        raise GrunError(
            f"the adapter in {directory} was trained on base model {saved.get('source')} "
            f"(fingerprint {want}) but the model given has fingerprint {got}; load it onto "
            "that base model (model.name_or_path=...)"
        )
