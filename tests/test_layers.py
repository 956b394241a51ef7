"""The package layers (docs/architecture.md): a lower layer never imports a higher one, and no
module imports another that imports it back — counting imports inside functions too.

    7 cli, config_docs                      the entry points (config_docs renders docs/config.md)
    6 commands, settings_check, compose_check, resume     compose, check, call an engine, print
    5 unlearning, sweep, repro, report      the engines and what reads run folders
    4 eval, api                             evaluation orchestration, loading a finished run
    3 train, data, models, scoring, sharding    training, data sources, model loading, scoring primitives
    2 adapters, methods                     the two seams
    1 everything else                       utilities (errors, io_utils, runtime, logprobs, distributed, ...)
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "grun_cli"
LAYERS = {"cli": 7, "__main__": 7, "config_docs": 7, "commands": 6, "settings_check": 6, "compose_check": 6, "resume": 6,
          "unlearning": 5, "sweep": 5, "repro": 5, "report": 5, "eval": 4, "api": 4,
          "train": 3, "data": 3, "models": 3, "scoring": 3, "sharding": 3, "adapters": 2, "methods": 2}


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(["grun_cli", *path.relative_to(SRC).with_suffix("").parts]).removesuffix(".__init__")
        out[name] = path
    return out


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("grun_cli"):
            found += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("grun_cli")]
    return found


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 1) if len(parts) > 1 else 1


def test_no_lower_layer_imports_a_higher_one() -> None:
    wrong = [f"{path.relative_to(SRC.parent)}:{line} imports {target} (layer {_layer(target)} > {_layer(name)})"
             for name, path in _modules().items() for line, target in _imports(path)
             if _layer(target) > _layer(name)]
    assert not wrong, "\n".join(wrong)


def test_no_import_loops() -> None:
    modules = _modules()
    edges = {name: {t for _, t in _imports(path) if t in modules and t != name} for name, path in modules.items()}
    loops, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                loops.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for name in sorted(modules):
        if name not in state:
            visit(name, [name])
    assert not loops, "\n".join(loops)


def test_the_layer_map_names_real_packages() -> None:
    tops = {p.stem if p.is_file() else p.name for p in SRC.iterdir() if p.suffix == ".py" or p.is_dir()}
    assert set(LAYERS) <= tops, set(LAYERS) - tops


def test_the_registries_name_their_components() -> None:
    """Every adapter kind a saved adapter may name has a class, every registered method and
    attack is found by discovery, and every data set has a source."""
    from grun_cli.adapters import ADAPTERS, KINDS
    from grun_cli.data import SOURCES
    from grun_cli.errors import GrunError
    from grun_cli.eval.attacks import ATTACKS
    from grun_cli.methods import METHODS

    assert set(ADAPTERS.names()) == set(KINDS)
    assert all(ADAPTERS.get(k).kind == k for k in KINDS)
    assert {"ga", "gd", "npo", "simnpo", "idk", "idkdpo", "rmu"} <= set(METHODS.names())
    assert all(METHODS.get(n).name == n for n in METHODS.names())
    assert {"edit_off", "paraphrase", "quantize_8bit", "relearn"} <= set(ATTACKS.names())
    assert SOURCES.names() == ["synthetic", "tofu", "wmdp"]
    try:
        METHODS.get("nope")
    except GrunError as e:
        assert str(e).startswith("unknown method 'nope'; choose one of: ga, gd,")
    else:
        raise AssertionError("an unknown name must be refused")
