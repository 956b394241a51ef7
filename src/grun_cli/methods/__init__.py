"""Unlearning methods: each is one module here plus one YAML in conf/method/."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from grun_cli.methods.base import Method, ModelAccess
from grun_cli.registry import Registry

METHODS: Registry[Method] = Registry("method", __name__, skip=("base", "losses"))
register = METHODS.register


def available() -> list[str]:
    return METHODS.names()


def make_method(cfg: Mapping[str, Any]) -> Method:
    return METHODS.get(cfg.get("name"))(cfg)


__all__ = ["METHODS", "Method", "ModelAccess", "available", "make_method", "register"]
