"""Sequential unlearning runs (their sequence.jsonl): metrics after each forget request, one
line per run (labelled method/adapter): forget quality and forget Prob on every author
forgotten so far, on the first request's authors (do they stay forgotten?) and model utility;
for forget corpora (WMDP), their held-out NLL."""

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

PANELS = (("forgotten_forget_quality", "forget quality, all authors forgotten so far", True),
          ("forgotten_forget_Q_A_Prob", "forget Prob, all authors forgotten so far", False),
          ("request_1_forget_Q_A_Prob", "forget Prob, request 1's authors", False),
          ("model_utility", "model utility", False))
#: Without the TOFU evaluation (eval.enabled=false): the probe's answer probabilities.
PROBE_PANELS = (("forgotten_forget_answer_prob", "forget answer prob, all forgotten so far", False),
                ("request_1_forget_answer_prob", "forget answer prob, request 1's authors", False),
                ("retain_answer_prob", "retain answer prob", False))
#: Text data (requests are forget corpora): the held-out NLL of each corpus (higher: forgotten).
TEXT_PANELS = (("forgotten_forget_text_nll", "held-out NLL, corpora forgotten so far", False),
               ("request_1_forget_text_nll", "held-out NLL, request 1's corpus", False),
               ("retain_text_nll", "held-out NLL, retain corpora", False))


def read_sequence(folder: Path) -> list[dict[str, Any]]:
    """The lines of a run's sequence.jsonl ([] for a run that is not a sequence)."""
    path = folder / "sequence.jsonl"
    if not path.is_file():
        return []
    lines = []
    for text in path.read_text().splitlines():
        try:
            line = json.loads(text) if text.strip() else None
        except json.JSONDecodeError:  # a truncated copy: plot what is readable
            log.warning("%s: skipping a line that is not JSON", path)
            continue
        if isinstance(line, dict) and isinstance(line.get("metrics"), dict) and isinstance(line.get("request"), dict):
            lines.append(line)
    return lines


def sequence_plot(rows: Sequence[Row], out: Path, *, dpi: int = DPI) -> tuple[Path | None, str]:
    runs = [(r, read_sequence(r.folder)) for r in rows if r.folder is not None and not r.is_reference]
    runs = [(r, lines) for r, lines in runs if lines]
    if not runs:
        return None, ""  # no sequence among the runs: nothing to say
    available = [p for p in (*PANELS, *PROBE_PANELS, *TEXT_PANELS)
                 if any(finite(line["metrics"].get(p[0])) for _, lines in runs for line in lines)]
    if not available:
        return None, "sequence.jsonl lines carry no metric to plot"
    plt = pyplot()
    fig, axes = plt.subplots(1, len(available), figsize=(4.2 * len(available), 3.6), squeeze=False)
    for ax, (key, title, log_scale) in zip(axes[0], available, strict=True):
        for (row, lines), colour in zip(runs, colours(len(runs)), strict=True):
            points = [(int(x["request"]["request"]), x["metrics"].get(key)) for x in lines]
            points = [(k, float(v)) for k, v in points if finite(v) and (not log_scale or float(v) > 0)]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", color=colour, label=row.label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("forget request")
        ax.xaxis.get_major_locator().set_params(integer=True)
        if log_scale:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("sequential unlearning: after each forget request", fontsize=11)
    return save(fig, out / "sequence.png", dpi), ""
