"""One registry for grun's components (methods, attacks, adapters, data sources): a name maps to
a class, and adding a component is one module plus one YAML (docs/contributing.md).

A component registers itself with ``@REGISTRY.register("name")`` in a module of its package
(the package's modules are imported on the first lookup), or is listed by ``"module:Class"``
so that looking it up imports only that module: the adapters pull in peft / pyreft, which
must not load for a run that uses neither.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from grun_cli.errors import GrunError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str, package: str | None = None, skip: Iterable[str] = (),
                 entries: Mapping[str, str] | None = None) -> None:
        """``what``: the component's name in messages (``method``); ``package``: the package whose
        modules register themselves (``skip``: its modules that are not components);
        ``entries``: name -> ``"module:Class"``, imported when looked up."""
        self.what = what
        self._package, self._skip = package, set(skip)
        self._entries: dict[str, type[T] | str] = dict(entries or {})
        self._discovered = package is None

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: ``cls.name = name``, and ``name`` looks it up."""
        def wrap(cls: type[T]) -> type[T]:
            cls.name = name  # type: ignore[attr-defined]
            self._entries[name] = cls
            return cls

        return wrap

    def _discover(self) -> None:
        if self._discovered:
            return
        package = importlib.import_module(self._package)  # type: ignore[arg-type]
        for module in pkgutil.iter_modules(package.__path__):
            if module.name not in self._skip:
                importlib.import_module(f"{self._package}.{module.name}")
        self._discovered = True

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._entries

    def get(self, name: Any) -> type[T]:
        """The class registered as ``name``; a GrunError naming the choices otherwise."""
        self._discover()
        entry = self._entries.get(str(name))
        if entry is None:
            raise GrunError(f"unknown {self.what} '{name}'; choose one of: {', '.join(self.names())}")
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            entry = self._entries[str(name)] = getattr(importlib.import_module(module), attr)
        return entry
