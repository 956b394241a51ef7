"""Forget quality and model utility along training, from the runs evaluated at chosen steps
(``eval.at_steps``: ``steps/<n>/metrics.json``), with each run's final evaluation as its last
point — what the official release reads from its checkpoints every 50 steps."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grun_cli.report.collect import Row
from grun_cli.report.figure import DPI, colours, pyplot, save
from grun_cli.sweep.select import finite

log = logging.getLogger(__name__)

PANELS = (("forget_quality", "forget quality (log scale)"), ("model_utility", "model utility"),
          ("forget_truth_ratio", "forget truth ratio"), ("forget_Q_A_Prob", "forget answer probability"))


def step_metrics(row: Row) -> list[dict[str, Any]]:
    """The run's evaluations along training, by step, ending with its final one."""
    if row.folder is None:
        return []
    points = []
    for path in sorted((row.folder / "steps").glob("*/metrics.json"), key=lambda p: int(p.parent.name)
                       if p.parent.name.isdigit() else -1):
        try:
            points.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            log.warning("%s: not readable, left out of the steps plot", path)
    if not points:
        return []
    final = row.metrics.get("train_steps")
    if final is not None:
        points.append({**row.metrics, "step": final})
    return [p for p in points if isinstance(p.get("step"), int)]


def steps_plot(rows: Sequence[Row], out: Path, *, dpi: int = DPI) -> tuple[Path | None, str]:
    runs = [(r, step_metrics(r)) for r in rows if not r.is_reference]
    runs = [(r, pts) for r, pts in runs if pts]
    if not runs:
        return None, ""  # no run asked for eval.at_steps: nothing to say
    panels = [(k, t) for k, t in PANELS if any(finite(p.get(k)) for _, pts in runs for p in pts)]
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    palette = colours(len(runs))
    for ax, (key, title) in zip(axes.flat, panels, strict=True):
        for colour, (row, pts) in zip(palette, runs, strict=True):
            have = [p for p in pts if finite(p.get(key)) and (key != "forget_quality" or p[key] > 0)]
            ax.plot([p["step"] for p in have], [p[key] for p in have], color=colour, marker="o", markersize=4,
                    lw=1.6, label=row.label)
        if key == "forget_quality":
            ax.set_yscale("log")
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("training step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    axes.flat[0].legend(fontsize=8, loc="best")
    fig.suptitle("evaluation along training (eval.at_steps; the last point is the final evaluation)", fontsize=12)
    fig.tight_layout()
    return save(fig, out / "steps.png", dpi), ""
