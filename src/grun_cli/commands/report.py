"""`grun report`: run folders or a sweep directory -> report.md / .csv / .tex and PNG plots.

Every input is checked (collect.py) before anything is written, so a bad folder costs one
line and no half-made report. The output folder is Hydra's run dir (``out=``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from grun_cli.commands.context import run_dir
from grun_cli.errors import GrunError
from grun_cli.runtime import as_list

log = logging.getLogger("grun.report")


def report(cfg: DictConfig) -> dict[str, Any]:
    from grun_cli.report.collect import from_runs, from_sweep
    from grun_cli.report.tables import markdown, write_tables

    runs, sweep_dir = [str(r) for r in as_list(cfg.get("runs"))], cfg.get("sweep_dir")
    if runs and sweep_dir:
        raise GrunError("give runs=[...] or sweep_dir=<dir>, not both; report the sweep's trial folders "
                        "with runs= to mix them with other runs")
    if not runs and not sweep_dir:
        raise GrunError("nothing to report: give runs=[<run folder>,...] (globs allowed) or "
                        "sweep_dir=<grun sweep directory>")
    out = run_dir()
    collected = (from_sweep(Path(str(sweep_dir))) if sweep_dir
                 else from_runs(runs, skip_incomplete=bool(cfg.skip_incomplete), exclude=out))
    written = list(write_tables(collected, out).values())
    skipped: list[str] = []
    if cfg.plots:
        from grun_cli.report.plots import make_plots

        figures, skipped = make_plots(collected, out, dpi=int(cfg.dpi))
        written += figures
    print(markdown(collected))
    for why in skipped:
        print(f"plot skipped: {why}")
    print("written:")
    for path in written:
        print(f"  {path}")
    return {"rows": len(collected.rows), "written": [str(p) for p in written]}
