"""Training curves from each run's train_log.jsonl (the HF Trainer's log_history): losses
and GRUN gate means per step, per layer where the run logged them."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from grun_cli.report.collect import Row
from grun_cli.report.figure import DPI, colours, pyplot, save
from grun_cli.sweep.select import finite

log = logging.getLogger(__name__)

CURVE_PANELS = (("loss", "total loss"), ("forget_loss", "forget loss"), ("retain_loss", "retain loss"),
                ("gate_bce", "gate BCE"), ("gate_forget", "gate mean on forget batches"),
                ("gate_retain", "gate mean on retain batches"))
LAYER_STYLES = ("--", ":", "-.", (0, (5, 1, 1, 1)))


def read_train_log(folder: Path) -> list[dict[str, Any]]:
    """The per-step lines of a run's train_log.jsonl (HF Trainer log_history): those with a
    loss; the final summary line (train_runtime, ...) is left out."""
    path = folder / "train_log.jsonl"
    if not path.is_file():
        return []
    lines = []
    for text in path.read_text().splitlines():
        if not text.strip():
            continue
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:  # a truncated copy: plot what is readable
            log.warning("%s: skipping a line that is not JSON", path)
    return [x for x in lines if isinstance(x, dict) and "loss" in x and "step" in x]


def _layers(steps: Sequence[Mapping[str, Any]], key: str) -> list[int]:
    """The layers with a per-layer ``<key>_layer<L>`` value in these log lines."""
    prefix = f"{key}_layer"
    return sorted({int(k[len(prefix):]) for s in steps for k in s
                   if k.startswith(prefix) and k[len(prefix):].isdigit()})


def training_curves(rows: Sequence[Row], out: Path, *, dpi: int = DPI) -> tuple[Path | None, str]:
    """Losses and gate means per step, one colour per run; per-layer gate means dashed. Only
    the panels some run logged (no gate row without a GRUN run)."""
    logs = [(r, read_train_log(r.folder)) for r in rows if r.folder is not None and not r.is_reference]
    logs = [(r, steps) for r, steps in logs if steps]
    if not logs:
        return None, "no run has per-step lines in train_log.jsonl"
    panels = [(k, t) for k, t in CURVE_PANELS if any(finite(s.get(k)) for _, steps in logs for s in steps)]
    plt = pyplot()
    rows_n = (len(panels) + 2) // 3
    fig, axes = plt.subplots(rows_n, 3, figsize=(13, 3.75 * rows_n), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    palette = colours(len(logs))
    for ax, (key, title) in zip(axes.flat, panels, strict=False):
        layers = sorted({n for _, steps in logs for n in _layers(steps, key)})[:len(LAYER_STYLES)]
        style = dict(zip(layers, LAYER_STYLES, strict=False))  # one line style per layer, in every run
        for colour, (row, steps) in zip(palette, logs, strict=True):
            have = [s for s in steps if finite(s.get(key))]
            if not have:
                continue
            marker = "o" if len(have) <= 20 else None
            ax.plot([s["step"] for s in have], [s[key] for s in have], color=colour, lw=1.6, marker=marker,
                    markersize=3.5, label=row.label)
            for layer in (n for n in _layers(steps, key) if n in style):
                name = f"{key}_layer{layer}"
                ax.plot([s["step"] for s in steps if finite(s.get(name))],
                        [s[name] for s in steps if finite(s.get(name))], color=colour, lw=1, ls=style[layer],
                        alpha=0.8)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        if key.startswith("gate_") and key != "gate_bce":
            ax.set_ylim(-0.03, 1.03)
            if style:
                from matplotlib.lines import Line2D

                ax.legend([Line2D([], [], color="black", lw=1.6)] +
                          [Line2D([], [], color="black", lw=1, ls=s) for s in style.values()],
                          ["mean over layers", *(f"layer {n}" for n in style)], fontsize=8, loc="best")
    handles = [plt.Line2D([], [], color=c, lw=2) for c in palette]
    fig.legend(handles, [r.label for r, _ in logs], loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=min(4, len(logs)), frameon=False, fontsize=10)
    fig.suptitle("training curves (train_log.jsonl)", fontsize=13)
    fig.tight_layout()
    return save(fig, out / "training_curves.png", dpi), ""
