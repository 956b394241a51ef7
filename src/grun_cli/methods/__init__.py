"""Unlearning methods: each is one module here plus one YAML in conf/method/."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from grun_cli.errors import GrunError
from grun_cli.methods.base import Method, ModelAccess

_REGISTRY: dict[str, type[Method]] = {}


def register(name: str):
    def wrap(cls: type[Method]) -> type[Method]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _discover() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if mod.name not in ("base", "losses"):
            importlib.import_module(f"{__name__}.{mod.name}")


def available() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def make_method(cfg: Mapping[str, Any]) -> Method:
    _discover()
    name = cfg.get("name")
    if name not in _REGISTRY:
        raise GrunError(f"unknown method '{name}'; choose one of: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](cfg)


__all__ = ["Method", "ModelAccess", "available", "make_method", "register"]
