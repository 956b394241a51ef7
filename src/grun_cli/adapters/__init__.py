"""Adapters: what an unlearning run trains. `grun` (gated LoReFT), `lora`, `full`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grun_cli.adapters.base import KINDS, Adapter, read_adapter_config
from grun_cli.registry import Registry
from grun_cli.settings import AdapterSettings

#: each adapter's class, imported when used (peft and pyreft load only for their adapter)
ADAPTERS: Registry[Adapter] = Registry("adapter", entries={
    "grun": "grun_cli.adapters.grun:GrunAdapter",
    "lora": "grun_cli.adapters.lora:LoraAdapter",
    "full": "grun_cli.adapters.full:FullAdapter",
})


def make_adapter(model: Any, settings: AdapterSettings, model_layers: Sequence[int] | None = None) -> Adapter:
    """A new adapter of kind ``settings.kind`` on ``model`` (``settings``: the settings check's
    ``Settings.adapter``; ``model_layers``: the model config's default blocks, for an adapter
    that edits chosen blocks)."""
    return ADAPTERS.get(settings.kind).create(model, settings, model_layers)


def load_adapter(model: Any, directory: str | Path, trainable: bool = False) -> Adapter:
    """Put a saved adapter back on its base model (refusing a different base); ``trainable``
    for training it further (e.g. a second unlearning request), else inference only.

    For ``full`` the folder holds the whole fine-tuned model: pass that model itself.
    """
    directory = Path(directory)
    saved = read_adapter_config(directory)  # refuses a kind not in KINDS (= ADAPTERS' names)
    return ADAPTERS.get(saved["kind"]).from_saved(model, saved, directory, trainable)


__all__ = ["ADAPTERS", "Adapter", "KINDS", "load_adapter", "make_adapter"]
