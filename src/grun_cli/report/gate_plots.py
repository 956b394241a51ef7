"""GRUN gate distributions from each run's GATES.json: how cleanly the gate splits forget
prompts from retain, real-authors and world-facts prompts, per edited layer."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grun_cli.eval.gates import GATES_FILE
from grun_cli.report.collect import Row
from grun_cli.report.figure import DPI, pyplot, save

log = logging.getLogger(__name__)

SET_NAMES = {"forget": "forget", "retain": "retain", "ra": "real authors (ra)", "wf": "world facts (wf)"}
SET_COLOURS = {"forget": "tab:red", "retain": "tab:blue", "ra": "tab:green", "wf": "tab:orange"}


def read_gates(folder: Path) -> dict[str, Any] | None:
    path = folder / GATES_FILE
    if not path.is_file():
        return None
    try:
        gates = json.loads(path.read_text())
    except json.JSONDecodeError:
        log.warning("%s is not valid JSON; its run is left out of the gate distributions", path)
        return None
    return gates if isinstance(gates, dict) and gates.get("layers") and gates.get("sets") else None


def gate_distributions(rows: Sequence[Row], out: Path, *, dpi: int = DPI) -> tuple[Path | None, str]:
    """Histograms of the per-prompt gate values on each prompt set, one row of panels per
    GRUN run and one panel per edited layer: how cleanly the gate splits forget from the rest."""
    runs = [(r, g) for r in rows if r.folder is not None for g in [read_gates(r.folder)] if g]
    if not runs:
        return None, ("no gate distributions: no run in the report has GATES.json (only GRUN runs have a gate, "
                      "and runs made before grun wrote GATES.json lack it: `grun eval run=<run>` writes one)")
    import numpy as np

    width = max(len(g["layers"]) for _, g in runs)
    plt = pyplot()
    fig, axes = plt.subplots(len(runs), width, figsize=(3.8 * width, 2.6 * len(runs) + 0.4), squeeze=False,
                             sharex=True)
    bins = np.linspace(0, 1, 21)
    for i, (row, gates) in enumerate(runs):
        for j in range(width):
            ax = axes[i][j]
            if j >= len(gates["layers"]):
                ax.axis("off")
                continue
            for name, values in gates["sets"].items():
                col = [v[j] for v in values]
                if not col:
                    continue
                colour = SET_COLOURS.get(name, "gray")
                weights = np.full(len(col), 1 / len(col))
                ax.hist(col, bins=bins, weights=weights, histtype="stepfilled", alpha=0.25, color=colour)
                ax.hist(col, bins=bins, weights=weights, histtype="step", lw=1.5, color=colour)
            ax.set_title(f"{row.label}: layer {gates['layers'][j]}", fontsize=10)
            ax.set_xlim(0, 1)
            ax.grid(True, alpha=0.3)
            if j == 0:
                ax.set_ylabel("fraction of prompts")
            if i == len(runs) - 1:
                ax.set_xlabel("gate value (sigmoid)")
    names = [n for n in SET_NAMES if any(n in g["sets"] for _, g in runs)]
    handles = [plt.Rectangle((0, 0), 1, 1, color=SET_COLOURS[n], alpha=0.5) for n in names]
    fig.legend(handles, [SET_NAMES[n] for n in names], loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=len(names), frameon=False, fontsize=10)
    fig.suptitle("GRUN gate values per prompt (GATES.json)", fontsize=12)
    fig.tight_layout()
    return save(fig, out / "gate_distributions.png", dpi), ""
