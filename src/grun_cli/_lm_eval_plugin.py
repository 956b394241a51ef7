"""Makes the plain `lm-eval` command know ``--model grun``.

lm-eval has no plugin entry points for models, so grun's wheel ships a ``.pth`` line that
calls :func:`install` at interpreter start. It only adds an import hook: when (and if)
``lm_eval.models`` is first imported, ``grun`` is registered as a lazy placeholder for
:class:`grun_cli.eval.lm_harness.GrunLM`, imported only when that model is asked for.
Nothing else is imported or slowed down, and any failure here is silent (never breaks Python).
"""

from __future__ import annotations

import sys
from typing import Any

WATCHED = "lm_eval.models"
MODEL = ("grun", "grun_cli.eval.lm_harness:GrunLM")


def register() -> None:
    from lm_eval.api.registry import model_registry

    if MODEL[0] not in model_registry:
        model_registry.register(MODEL[0], target=MODEL[1])


class _Finder:
    """A meta-path finder that only wraps the loader of ``lm_eval.models``."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != WATCHED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                break
        else:
            return None
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            try:
                register()
            except Exception:  # an lm-eval without this registry API: grun stays unregistered
                pass

        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    if "lm_eval.models" in sys.modules:
        try:
            register()
        except Exception:
            pass
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
