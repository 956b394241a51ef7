"""Make a table's rows: every cell through the real `grun unlearn` (a child process each, as a
user would run it), the target / retain reference rows, `grun report` on the result, and for
the efficiency table the step-cost benchmark and parameter counts.

A cell's folder that already holds a complete run is reused, so an interrupted `grun repro`
continues where it stopped when given the same ``out=``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grun_cli.errors import GrunError
from grun_cli.io_utils import atomic_write_json
from grun_cli.repro.manifest import Cell, MetricSpec, Table

log = logging.getLogger("grun.repro")

Rows = dict[str, dict[str, Any]]  # row name -> metrics


@dataclass
class TableRun:
    """What one table produced: metrics per seed, the reference rows, the labels for claims."""

    table: Table
    data: str | None
    per_seed: list[Rows] = field(default_factory=list)
    references: Rows = field(default_factory=dict)
    labels: dict[str, dict[str, str]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    report: Path | None = None
    seconds: float = 0.0

    def averaged(self) -> Rows:
        """Each row's metrics averaged over the seeds (geometric mean for log-scale metrics),
        with the reference rows (the same for every seed)."""
        out: Rows = {}
        for row in sorted({r for seed in self.per_seed for r in seed}):
            values: dict[str, list[float]] = {}
            for seed in self.per_seed:
                for k, v in (seed.get(row) or {}).items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        values.setdefault(k, []).append(float(v))
            spec = self.table.metrics
            out[row] = {k: _mean(v, spec.get(k)) for k, v in values.items()}
        return {**self.references, **out}

    def seed_values(self) -> dict[str, dict[str, list[float]]]:
        """Each row's numeric metrics as one value per seed (the reference rows: one value)."""
        out: dict[str, dict[str, list[float]]] = {}
        for rows in [self.references, *self.per_seed]:
            for row, metrics in rows.items():
                for k, v in (metrics or {}).items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        out.setdefault(row, {}).setdefault(k, []).append(float(v))
        return out

    def claim_rows(self) -> dict[str | None, list[tuple[dict[str, str], dict[str, Any]]]]:
        """The rows claims are checked on (per-seed values: the three-outcome rule), per model
        (one group, None, unless cells name models)."""
        rows = [(self.labels.get(name, {"row": name}), metrics) for name, metrics in self.seed_values().items()]
        models = sorted({labels["model"] for labels, _ in rows if "model" in labels})
        if not models:
            return {None: rows}
        return {m: [(labels, metrics) for labels, metrics in rows if labels.get("model") == m] for m in models}


def _mean(values: Sequence[float], spec: MetricSpec | None) -> float:
    if any(math.isnan(v) for v in values):
        return math.nan
    if spec is not None and spec.log10:
        if any(v <= 0 for v in values):
            return min(values)
        return 10 ** statistics.fmean(math.log10(v) for v in values)
    return statistics.fmean(values)


def _complete(folder: Path) -> bool:
    from grun_cli.report.collect import is_complete

    return is_complete(folder)


def grun_command(args: Sequence[str]) -> list[str]:
    """The `grun` command line as a child process of this interpreter."""
    return [sys.executable, "-m", "grun_cli", *args]


def cell_overrides(cell: Cell, seed: int, data: str | None, table: Table, extra: Sequence[str]) -> list[str]:
    """The cell's `grun unlearn` overrides: its experiment, the seed, the data set this machine
    has (the table's, or its fallback), the cell's own and the command line's extras."""
    data_override = [f"data={data}"] if data is not None else []
    model = [f"model={cell.labels['model']}"] if "model" in cell.labels else []
    return [f"experiment={cell.experiment}", f"seed={seed}", *model, *data_override, *cell.overrides, *extra]


#: cells running as child processes, stopped when the table is interrupted (a SIGTERM reaches
#: only this process; its cells would run on as orphans)
_RUNNING: set[subprocess.Popen] = set()
_STOPPING = threading.Event()


def stop_cells() -> None:
    """SIGTERM to every running cell (each marks its folder INTERRUPTED and exits); no new
    cell starts after this."""
    _STOPPING.set()
    for proc in list(_RUNNING):
        proc.terminate()


def run_cell(cell: Cell, overrides: Sequence[str], folder: Path,
             env: Mapping[str, str] | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """``grun unlearn <overrides>`` into ``folder`` (reused when complete); its metrics or why not."""
    if not _complete(folder):
        if _STOPPING.is_set():
            return None, "interrupted"
        folder.parent.mkdir(parents=True, exist_ok=True)
        with open(folder.parent / f"{folder.name}.log", "w") as out:
            proc = subprocess.Popen(grun_command(["unlearn", *overrides, f"hydra.run.dir={folder}"]),
                                    stdout=out, stderr=subprocess.STDOUT, env=dict(env or os.environ))
            _RUNNING.add(proc)
            try:
                proc.wait()
            finally:
                _RUNNING.discard(proc)
        if proc.returncode != 0 or not _complete(folder):
            lines = (folder.parent / f"{folder.name}.log").read_text(errors="replace").strip().splitlines()
            last = next((ln for ln in reversed(lines) if ln.strip()), "no output")
            return None, f"exit {proc.returncode}: {last[-200:]} (log: {folder.parent / (folder.name + '.log')})"
    return json.loads((folder / "metrics.json").read_text()), None


def references(overrides: Sequence[str], out: Path) -> dict[str, Path]:
    """The target (and retain) model's evaluation for a cell's `grun unlearn` overrides, as
    report rows: the sweeps' reference code, cached across runs for the tiny model."""
    from hydra import compose

    from grun_cli.sweep.references import ensure_references

    return ensure_references(compose(config_name="unlearn", overrides=list(overrides)), out)


def _finetune_in_child(overrides: Sequence[str], split: str, threads: int) -> str:
    """One cached tiny fine-tune (target or retain model), built in its own process."""
    import torch
    from hydra import compose, initialize_config_dir

    from grun_cli.config import config_dir
    from grun_cli.models.target import ensure_finetuned

    torch.set_num_threads(threads)
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        return str(ensure_finetuned(compose(config_name="unlearn", overrides=list(overrides)), split))


def prebuild_finetunes(overrides: Sequence[str], jobs: int, threads: int) -> None:
    """The tiny model's target and retain fine-tunes side by side (`jobs` >= 2), before the
    reference rows need them one after the other: on a fresh clone they are the longest step
    of the table. Each is built as it would be in-process (same recipe, same thread count), so
    the cache holds the same bytes either way."""
    from hydra import compose

    cfg = compose(config_name="unlearn", overrides=list(overrides))
    if jobs < 2 or cfg.model.name != "tiny" or cfg.model.get("name_or_path") or str(cfg.eval.get("kind")) != "tofu":
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in [pool.submit(_finetune_in_child, list(overrides), split, threads) for split in ("full", "retain")]:
            future.result()


def _target_in_child(overrides: Sequence[str], threads: int) -> None:
    """A table's cached tiny target (nothing for other models), built in a background process."""
    import torch
    from hydra import compose, initialize_config_dir

    from grun_cli.config import config_dir
    from grun_cli.models.target import ensure_finetuned

    torch.set_num_threads(threads)
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        cfg = compose(config_name="unlearn", overrides=list(overrides))
        if cfg.model.name == "tiny" and not cfg.model.get("name_or_path"):
            ensure_finetuned(cfg, "full")


def warm_targets(later: Sequence[tuple[Table, str | None]], scale: str, seed: int, extra: Sequence[str],
                 threads: int) -> Any:
    """Start building the later tables' cached tiny targets in one background process while the
    current table runs: it fills the core a table leaves idle (its reference evaluation, its last
    cell). A table needing a target still being built waits on the cache's lock and reuses it
    (never builds it twice); the bytes are those an in-process build writes (same recipe, same
    thread count). Returns the process (daemonic: it ends with `grun repro`), or None."""
    import multiprocessing

    wanted = [cell_overrides(table.cells[scale][0], seed, data, table, extra)
              for table, data in later if table.cells.get(scale)]
    if not wanted:
        return None
    proc = multiprocessing.get_context("spawn").Process(target=_warm_all, args=(wanted, threads), daemon=True,
                                                        name="grun-repro-warm")
    proc.start()
    return proc


def _warm_all(wanted: Sequence[Sequence[str]], threads: int) -> None:
    for overrides in wanted:
        try:
            _target_in_child(overrides, threads)
        except Exception as e:  # noqa: BLE001 - the table that needs it builds it and reports
            log.warning("building a later table's target in the background failed (%s); the table will try", e)


def run_table(table: Table, scale: str, seeds: Sequence[int], out: Path, data: str | None,
              extra: Sequence[str], jobs: int = 1, threads: int = 1, echo: Any = print) -> TableRun:
    """The reference rows first (they build the cached target and retain models, so parallel
    cells never race to build them), then every cell for every seed, ``jobs`` at a time with
    ``threads`` torch threads each (the same thread count on every machine: a rerun with one
    seed gives the same numbers), then the report."""
    import torch

    started = time.time()
    result = TableRun(table, data)
    cells = table.cells[scale]
    torch.set_num_threads(threads)
    folders: list[Path] = []
    if table.references and cells:
        models: dict[str | None, Cell] = {}
        for cell in cells:  # one target / retain pair per model (paper scale has two)
            models.setdefault(cell.labels.get("model"), cell)
        for model, first in models.items():
            where = out / table.name / (f"refs_{model}" if model else "")
            overrides = cell_overrides(first, seeds[0], data, table, extra)
            prebuild_finetunes(overrides, jobs, threads)
            refs = references(overrides, where)
            for role, folder in refs.items():
                name = f"{role}@{model}" if model else role
                result.references[name] = json.loads((folder / "metrics.json").read_text())
                result.labels[name] = {"role": role, **({"model": model} if model else {})}
                folders.append(folder)
    tasks = [(seed, cell) for seed in seeds for cell in cells]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}

    def one(task: tuple[int, Cell]) -> tuple[int, Cell, dict[str, Any] | None, str | None, float]:
        seed, cell = task
        t0 = time.time()
        metrics, error = run_cell(cell, cell_overrides(cell, seed, data, table, extra),
                                  out / table.name / f"seed{seed}" / cell.folder, env)
        return seed, cell, metrics, error, time.time() - t0

    per_seed: dict[int, Rows] = {seed: {} for seed in seeds}
    from concurrent.futures import ThreadPoolExecutor, as_completed

    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    try:
        futures = [pool.submit(one, t) for t in tasks]
        for done, future in enumerate(as_completed(futures), 1):
            seed, cell, metrics, error, took = future.result()
            if error:
                result.failures.append(f"{cell.name} seed {seed}: {error}")
                echo(f"  [{done}/{len(tasks)}] {table.name} {cell.name} seed {seed}: FAILED {error}")
                continue
            per_seed[seed][cell.name] = metrics
            result.labels[cell.name] = {"method": cell.method, "adapter": cell.adapter, **cell.labels}
            echo(f"  [{done}/{len(tasks)}] {table.name} {cell.name} seed {seed}: {took:.0f} s", flush=True)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stop the cells too; `out=` continues later
        pool.shutdown(wait=False, cancel_futures=True)
        stop_cells()
        raise
    pool.shutdown()
    result.per_seed = [per_seed[seed] for seed in seeds]
    result.report = make_report(result, out / table.name, seeds[0], folders, cells)
    result.seconds = time.time() - started
    return result


def make_report(result: TableRun, table_out: Path, seed: int, references: Sequence[Path],
                cells: Sequence[Cell]) -> Path | None:
    """`grun report` over the first seed's runs and the references (report.md, plots)."""
    runs = [str(f) for f in references]
    runs += [str(table_out / f"seed{seed}" / c.folder) for c in cells
             if _complete(table_out / f"seed{seed}" / c.folder)]
    if not runs:
        return None
    report_dir = table_out / "report"
    with open(table_out / "report.log", "w") as log_file:
        proc = subprocess.run(grun_command(["report", f"runs=[{','.join(runs)}]", f"out={report_dir}"]),
                              stdout=log_file, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        result.failures.append(f"grun report failed (exit {proc.returncode}); see {table_out / 'report.log'}")
        return None
    return report_dir


# -- the efficiency table -----------------------------------------------------------------
def efficiency_shapes(table: Table, scale: str) -> dict[str, list[str]]:
    """The shapes whose steps ``scale`` times: `ci_step_shapes` (CI's time budget) at scale=ci,
    every one of `step_shapes` otherwise."""
    shapes = step_shapes(table.settings.get("step_shapes", ["tiny"]))
    ci = table.settings.get("ci_step_shapes")
    if scale == "ci" and ci is not None:
        return {k: v for k, v in shapes.items() if k in {str(c) for c in ci}}
    return shapes


def run_efficiency(table: Table, repo: Path, out: Path, repeats: int, echo: Any = print,
                   scale: str = "cpu") -> TableRun:
    """Step time / peak memory ratios (benchmarks/step_cost.py, one run per repeat) and the
    trainable parameters at full-size shapes (counted on the meta device, no weights)."""
    started = time.time()
    script = repo / "benchmarks" / "step_cost.py"
    if not script.is_file():
        raise GrunError(f"the efficiency table needs {script}; run grun repro from a clone of the repository")
    result = TableRun(table, None)
    settings = table.settings
    shapes = efficiency_shapes(table, scale)
    counts = [str(s) for s in settings.get("count_shapes", [])]
    out_dir = out / table.name
    out_dir.mkdir(parents=True, exist_ok=True)
    for repeat in range(repeats):
        path = out_dir / f"step_cost_{repeat}.json"
        if not path.is_file():
            measured: dict[str, Any] = {}
            for shape, shape_args in shapes.items():
                part = out_dir / f"step_cost_{repeat}.{shape}.json"
                cmd = [sys.executable, str(script), "--arch", shape, "--json", str(part),
                       *[str(a) for a in settings.get("step_args", [])], *shape_args]
                t0 = time.time()
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    result.failures.append(f"step_cost.py failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
                    break
                measured.update(json.loads(part.read_text()))
                part.unlink()
                echo(f"  [{repeat + 1}/{repeats}] {table.name} step cost {shape}: {time.time() - t0:.0f} s")
            if result.failures:
                break
            atomic_write_json(path, measured)
        rows: Rows = {}
        for arch, adapters in json.loads(path.read_text()).items():
            full = adapters.get("full") or {}
            for adapter, r in adapters.items():
                if "error" in r:
                    continue
                name = f"{arch}/{adapter}"
                rows[name] = {"step_time_vs_full": r["step_ms"] / full["step_ms"] if full.get("step_ms") else None,
                              "peak_memory_vs_full": r["peak_mb"] / full["peak_mb"] if full.get("peak_mb") else None,
                              "trainable_percent": r["trainable_pct"], "trainable_parameters": r["trainable"]}
                result.labels[name] = {"arch": arch, "adapter": adapter}
        result.per_seed.append(rows)
    if counts:
        path = out_dir / "trainable_counts.json"
        if not path.is_file():
            proc = subprocess.run([sys.executable, str(script), "--count-only", "--arch", *counts, "--json", str(path)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                result.failures.append(f"parameter count failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
        if path.is_file():
            for arch, adapters in json.loads(path.read_text()).items():
                for adapter, r in adapters.items():
                    name = f"{arch}/{adapter}"
                    result.references[name] = {"trainable_percent": r["trainable_pct"],
                                               "trainable_parameters": r["trainable"]}
                    result.labels[name] = {"arch": arch, "adapter": adapter}
    result.seconds = time.time() - started
    return result


def step_shapes(setting: Any) -> dict[str, list[str]]:
    """The efficiency table's `step_shapes`: a list of shapes, or shape -> its own step_cost.py
    arguments (after `step_args`: a tiny step needs more steps and rounds than a mid-size one to
    time steadily, and costs far less)."""
    if isinstance(setting, Mapping):
        return {str(k): [str(a) for a in (v or [])] for k, v in setting.items()}
    return {str(s): [] for s in setting}


def describe_machine() -> dict[str, Any]:
    """Where numbers were measured: float32 summation order differs between CPUs (AVX2 vs
    AVX-512), enough to move recorded metrics slightly."""
    import platform

    import torch

    return {"cpu": _cpu_model(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "cuda": torch.cuda.is_available()}


def _cpu_model() -> str:
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def rows_for_expected(result: TableRun) -> list[Mapping[str, Mapping[str, Any]]]:
    """Per-seed rows with the reference rows in each (their spread is zero)."""
    return [{**result.references, **rows} for rows in result.per_seed]
