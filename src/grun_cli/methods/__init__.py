"""Unlearning methods: each is one module here plus one YAML in conf/method/."""

from __future__ import annotations

from grun_cli.methods.base import Method, ModelAccess
from grun_cli.registry import Registry
from grun_cli.settings import MethodSettings

METHODS: Registry[Method] = Registry("method", __name__, skip=("base", "losses"))
register = METHODS.register


def available() -> list[str]:
    return METHODS.names()


def make_method(settings: MethodSettings) -> Method:
    """The method ``settings.name`` (settings validated as its ``settings_type``: the settings
    check's ``Settings.method``)."""
    return METHODS.get(settings.name)(settings)


__all__ = ["METHODS", "Method", "ModelAccess", "available", "make_method", "register"]
