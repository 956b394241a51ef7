"""A reproduced table's folder: ``table.yaml`` (what to run), ``expected_<data>.json`` (what it
gave on the development machine) and ``claims.yaml`` (what the paper says about it).

Everything is read with ``yaml.safe_load`` / ``json`` and checked here, before any model
loads: a table that cannot run ends in one line naming the file and the fix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from grun_cli.errors import GrunError

KINDS = ("tofu", "wmdp", "efficiency")
SCALES = ("ci", "cpu", "paper")
CPU_SCALES = ("ci", "cpu")  # the tiny model: measured into expected_ci*.json
TABLE_FILE = "table.yaml"
CLAIMS_FILE = "claims.yaml"


@dataclass(frozen=True)
class MetricSpec:
    """How a number is compared: on a log10 scale or not, which way is a regression, and the
    smallest tolerance (seeds that agree exactly still differ across thread counts). A
    ``wall_clock`` number (a timing ratio) moves with whatever else the machine runs: outside its
    tolerance it is reported, not failed, and the claims over it (with wide margins) are the checks."""

    name: str
    log10: bool = False
    better: str | None = None  # higher | lower | None (a change either way is a regression)
    min_tol: float = 0.0
    wall_clock: bool = False


@dataclass(frozen=True)
class Cell:
    """One table line: ``grun unlearn experiment=<experiment>`` (+ ``overrides``)."""

    method: str
    adapter: str
    experiment: str
    overrides: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """method/adapter, with @model when the table names models (paper scale: two models)."""
        model = self.labels.get("model")
        return f"{self.method}/{self.adapter}" + (f"@{model}" if model else "")

    @property
    def folder(self) -> str:
        return self.name.replace("/", "_").replace("@", "_")


@dataclass
class Table:
    name: str
    folder: Path
    title: str
    kind: str
    data: str | None
    fallback: str | None
    references: bool
    cells: dict[str, list[Cell]]  # by scale
    metrics: dict[str, MetricSpec]
    settings: dict[str, Any]  # kind-specific (efficiency: shapes, ...)

    def has_data(self, data_root: str | None) -> bool:
        """Whether the table's own data set is here (generated, or a copy under ``data_root``)."""
        return self.data == "synthetic" or bool(data_root and self.data and (Path(data_root) / self.data).is_dir())

    def data_for(self, data_root: str | None) -> str | None:
        """The data set the cells run on: the real one when its files are under
        ``data_root`` ($GRUN_DATA_DIR), else the fallback (None: the table is skipped)."""
        if self.data is None:
            return None
        if self.data == "synthetic":  # generated, always there
            return self.data
        if self.has_data(data_root):
            return self.data
        from grun_cli.models.hub import hub_reachable

        return self.data if hub_reachable() else self.fallback  # the loaders read it from the Hub

    def only(self, scale: str, names: set[str]) -> Table:
        """This table with only the named cells at ``scale`` (the references stay)."""
        from dataclasses import replace

        return replace(self, cells={**self.cells, scale: [c for c in self.cells.get(scale, []) if c.name in names]})

    def not_run(self, scale: str) -> set[str]:
        """The CPU-scale cells this scale leaves out (scale=ci runs a subset of scale=cpu):
        their recorded numbers are not expected from the run."""
        if scale not in CPU_SCALES:
            return set()
        ran = {c.name for c in self.cells.get(scale, [])}
        return {c.name for s in CPU_SCALES for c in self.cells.get(s, [])} - ran

    def expected_path(self, data: str | None) -> Path:
        return self.folder / (f"expected_ci.{data}.json" if data and data != self.data else "expected_ci.json")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise GrunError(f"{where} must be a mapping, not {type(value).__name__}")
    return dict(value)


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise GrunError(f"{path} is not valid YAML{at}; fix the file") from e


def _cells(raw: Any, where: str) -> list[Cell]:
    if not isinstance(raw, list) or not raw:
        raise GrunError(f"{where} must be a non-empty list of {{method, adapter, experiment}}")
    cells = []
    for i, item in enumerate(raw):
        item = _mapping(item, f"{where}[{i}]")
        missing = [k for k in ("method", "adapter", "experiment") if not item.get(k)]
        if missing:
            raise GrunError(f"{where}[{i}] has no {', '.join(missing)}")
        overrides = item.get("overrides") or []
        if not isinstance(overrides, list):
            raise GrunError(f"{where}[{i}].overrides must be a list of key=value")
        labels = {k: str(v) for k, v in item.items() if k not in ("method", "adapter", "experiment", "overrides")}
        cells.append(Cell(str(item["method"]), str(item["adapter"]), str(item["experiment"]),
                          tuple(str(o) for o in overrides), labels))
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise GrunError(f"{where} names a (method, adapter) cell twice: {sorted(n for n in names if names.count(n) > 1)}")
    return cells


def load_table(folder: Path) -> Table:
    path = folder / TABLE_FILE
    if not path.is_file():
        raise GrunError(f"{folder} has no {TABLE_FILE}; each reproduced table is a folder under experiments/ "
                        f"with its {TABLE_FILE}")
    raw = _mapping(_load_yaml(path), str(path))
    kind = raw.get("kind")
    if kind not in KINDS:
        raise GrunError(f"{path}: kind is {kind!r}; choose one of {', '.join(KINDS)}")
    raw_cells = _mapping(raw.get("cells"), f"{path}: cells")
    cells = {scale: _cells(raw_cells[scale], f"{path}: cells.{scale}")
             for scale in SCALES if raw_cells.get(scale) is not None}
    if "ci" in cells:  # cells.cpu lists the rest of the CPU-scale table: scale=cpu runs ci + cpu
        cells["cpu"] = _cells([*raw_cells["ci"], *(raw_cells.get("cpu") or [])], f"{path}: cells.ci + cells.cpu")
    if kind != "efficiency" and not {"ci", "cpu"} & set(cells):
        raise GrunError(f"{path}: no cells.ci or cells.cpu; list the selected configs the CI (ci) or "
                        "`make repro-cpu` (cpu: a table too long for CI) reruns")
    data = _mapping(raw.get("data"), f"{path}: data")
    metrics = {}
    for name, spec in _mapping(raw.get("metrics"), f"{path}: metrics").items():
        spec = _mapping(spec, f"{path}: metrics.{name}")
        unknown = set(spec) - {"log10", "better", "min_tol", "wall_clock"}
        if unknown:
            raise GrunError(f"{path}: metrics.{name} has unknown keys {sorted(unknown)}; "
                            "use log10, better, min_tol, wall_clock")
        if spec.get("better") not in (None, "higher", "lower"):
            raise GrunError(f"{path}: metrics.{name}.better is {spec['better']!r}; use higher, lower or null")
        metrics[name] = MetricSpec(name, bool(spec.get("log10", False)), spec.get("better"),
                                   float(spec.get("min_tol", 0.0)), bool(spec.get("wall_clock", False)))
    if not metrics:
        raise GrunError(f"{path}: no metrics; name the numbers the CI compares")
    known = {"title", "kind", "data", "references", "cells", "metrics"}
    return Table(folder.name, folder, str(raw.get("title", folder.name)), kind, data.get("name"),
                 data.get("fallback"), bool(raw.get("references", kind == "tofu")), cells, metrics,
                 {k: v for k, v in raw.items() if k not in known})


def find_tables(root: Path, names: list[str] | None) -> list[Table]:
    """The tables under ``root`` (experiments/): the named ones, else every folder with a table.yaml."""
    if not root.is_dir():
        raise GrunError(f"experiments folder {root} does not exist; run from the repository root or set root=")
    available = sorted(p.name for p in root.iterdir() if (p / TABLE_FILE).is_file())
    if not names:
        return [load_table(root / n) for n in available]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise GrunError(f"tables: no table {', '.join(unknown)} under {root}; choose from {', '.join(available)}")
    return [load_table(root / n) for n in names]


def read_expected(table: Table, data: str | None) -> dict[str, Any] | None:
    path = table.expected_path(data)
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise GrunError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); regenerate it with update=true") from e
    if not isinstance(content.get("numbers"), Mapping):
        raise GrunError(f"{path} has no numbers; regenerate it with update=true")
    return content


def data_root() -> str | None:
    return os.environ.get("GRUN_DATA_DIR") or None
