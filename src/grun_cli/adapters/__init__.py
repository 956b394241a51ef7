"""Adapters: what an unlearning run trains. `grun` (gated LoReFT), `lora`, `full`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from grun_cli.adapters.base import Adapter, check_base, read_adapter_config
from grun_cli.errors import GrunError

KINDS = ("grun", "lora", "full")


def make_adapter(model: Any, cfg: Mapping[str, Any], model_layers: Sequence[int] | None = None) -> Adapter:
    kind = cfg.get("kind")
    if kind == "grun":
        from grun_cli.adapters.grun import GrunAdapter

        return GrunAdapter(model, cfg, layers=model_layers)
    if kind == "lora":
        from grun_cli.adapters.lora import LoraAdapter

        return LoraAdapter(model, cfg)
    if kind == "full":
        from grun_cli.adapters.full import FullAdapter

        return FullAdapter(model, cfg)
    raise GrunError(f"unknown adapter '{kind}'; choose one of: {', '.join(KINDS)}")


def load_adapter(model: Any, directory: str | Path, trainable: bool = False) -> Adapter:
    """Put a saved adapter back on its base model (refusing a different base); ``trainable``
    for training it further (e.g. a second unlearning request), else inference only.

    For ``full`` the folder holds the whole fine-tuned model: pass that model itself.
    """
    directory = Path(directory)
    saved = read_adapter_config(directory)
    kind = saved["kind"]
    if kind == "full":
        from grun_cli.adapters.full import FullAdapter

        return FullAdapter(model, saved["config"])
    check_base(saved["base_model"], model, directory)
    if kind == "grun":
        from grun_cli.adapters.grun import GrunAdapter

        adapter = GrunAdapter(model, saved["config"])
        adapter.load_weights(directory, trainable=trainable)
        return adapter
    if kind == "lora":
        from grun_cli.adapters.lora import LoraAdapter

        return LoraAdapter.load(model, saved["config"], directory, trainable=trainable)
    raise GrunError(f"{directory}: unknown adapter kind '{kind}'")


__all__ = ["Adapter", "KINDS", "load_adapter", "make_adapter"]
