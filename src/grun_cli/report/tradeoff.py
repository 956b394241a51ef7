"""The forget / utility trade-off plot: every trial or run as a point per (method, adapter)
cell, each cell's Pareto front as a step line (sweep.select.pareto_front), the selected
trials ringed, the reference models (target, retain) marked and labelled."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grun_cli.report.collect import ABSENT, Point, Report, Row, kind_of, metric
from grun_cli.report.figure import DPI, colours, pyplot, save
from grun_cli.sweep.select import finite, pareto_front

ADAPTER_MARKERS = {"grun": "o", "lora": "s", "full": "^"}
REFERENCE_MARKERS = {"target": "*", "retain": "X"}
OTHER_REFERENCE_MARKERS = ("h", "D", "P", "p", "v", "<")


def reference_markers(rows: Sequence[Row]) -> dict[str, str]:
    """label -> marker: a star for the target, a cross for the retain model, and a distinct
    marker for every other reference model (e.g. `grun eval` runs without a role)."""
    others = iter(OTHER_REFERENCE_MARKERS * (1 + len(rows) // len(OTHER_REFERENCE_MARKERS)))
    return {r.label: REFERENCE_MARKERS.get(r.role or "") or next(others) for r in rows}


@dataclass(frozen=True)
class Axis:
    metric: str
    label: str
    direction: str = "maximize"
    log: bool = False


@dataclass(frozen=True)
class Tradeoff:
    x: Axis  # the utility side
    y: Axis  # the forget side
    filename: str


KNOWN_LABELS = {
    "forget_quality": "forget quality (KS p-value)",
    "model_utility": "model utility",
    "forget_text_nll": "forget text NLL (held-out; higher = forgotten)",
    "retain_text_nll": "retain text NLL (held-out; lower = kept)",
    "wmdp_bio_acc": "WMDP-bio accuracy",
    "wmdp_cyber_acc": "WMDP-cyber accuracy",
    "mmlu_acc": "MMLU accuracy",
}
TRADEOFFS = {
    "tofu": Tradeoff(Axis("model_utility", "model utility"),
                     Axis("forget_quality", "forget quality (KS p-value, log scale)", log=True),
                     "forget_quality_vs_utility.png"),
    # On any scale the held-out NLLs move; WMDP accuracies stay at chance on a small model.
    "wmdp": Tradeoff(Axis("retain_text_nll", KNOWN_LABELS["retain_text_nll"], "minimize"),
                     Axis("forget_text_nll", KNOWN_LABELS["forget_text_nll"]),
                     "forget_nll_vs_retain_nll.png"),
}


def _axis_label(name: str, log: bool) -> str:
    label = KNOWN_LABELS.get(name.removeprefix("after_"), name)
    if not log:
        return label
    return label[:-1] + ", log scale)" if label.endswith(")") else label + " (log scale)"


def tradeoff_for(kind: str, objective: Mapping[str, Any] | None = None) -> Tradeoff:
    """The axes of ``kind``'s plot; a sweep's objectives (forget on y, utility on x) when given."""
    base = TRADEOFFS[kind]
    forget, utility = (objective or {}).get("forget"), (objective or {}).get("utility")
    if not forget or not utility:
        return base
    y = Axis(str(forget["metric"]), _axis_label(str(forget["metric"]), bool(forget.get("log"))),
             str(forget.get("direction", "maximize")), bool(forget.get("log")))
    x = Axis(str(utility["metric"]), _axis_label(str(utility["metric"]), bool(utility.get("log"))),
             str(utility.get("direction", "maximize")), bool(utility.get("log")))
    if (y.metric, x.metric) == ("forget_quality", "model_utility"):
        filename = base.filename
    else:
        filename = f"{y.metric.removeprefix('after_')}_vs_{x.metric.removeprefix('after_')}.png"
    return Tradeoff(x, y, filename)


def _value(metrics: Mapping[str, Any], axis: Axis) -> float | None:
    v = metric(metrics, axis.metric)
    return float(v) if v is not ABSENT and finite(v) else None


def _arrow(axis: Axis, up: str, down: str) -> str:
    return up if axis.direction == "maximize" else down


def tradeoff_plot(report: Report, kind: str, out: Path, *, dpi: int = DPI) -> tuple[Path | None, str]:
    """Every trial (or run) as a point, coloured by (method, adapter) cell with a marker per
    adapter, each cell's Pareto front as a step line, the selected trials ringed, the
    reference models marked and labelled."""
    objective = report.sweep.objective if report.sweep is not None else None
    if objective and kind_of({str(v.get("metric")): 0 for v in objective.values()}) != kind:
        objective = None
    spec = tradeoff_for(kind, objective)
    points = [p for p in report.points if kind_of(p.metrics) == kind]
    refs = [r for r in report.rows if r.is_reference and r.kind == kind]
    skipped = [p for p in points if _value(p.metrics, spec.x) is None or _value(p.metrics, spec.y) is None]
    shown = [p for p in points if p not in skipped]
    ref_xy = [(r, _value(r.metrics, spec.x), _value(r.metrics, spec.y)) for r in refs]
    ref_xy = [(r, x, y) for r, x, y in ref_xy if x is not None and y is not None]
    if not shown and not ref_xy:
        return None, f"no run has both {spec.y.metric} and {spec.x.metric}"

    floor = None
    if spec.y.log:  # a p-value may underflow to 0: draw it on a floor line, say so
        positive = [y for y in [_value(p.metrics, spec.y) for p in shown] + [y for _, _, y in ref_xy] if y and y > 0]
        floor = min(positive) / 10 if positive else 1e-300

    def y_of(v: float) -> float:
        return floor if floor is not None and v <= 0 else v

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    cells = sorted({p.cell for p in shown})
    for colour, cell in zip(colours(len(cells)), cells, strict=True):
        members = [p for p in shown if p.cell == cell]
        xs = [_value(p.metrics, spec.x) for p in members]
        ys = [_value(p.metrics, spec.y) for p in members]
        marker = ADAPTER_MARKERS.get(members[0].adapter or "", "D")
        ax.scatter(xs, [y_of(y) for y in ys], color=colour, marker=marker, s=40, alpha=0.85, label=cell, zorder=3)
        front = sorted(pareto_front(list(zip(xs, ys, strict=True)), (spec.x.direction, spec.y.direction)),
                       key=lambda i: xs[i])
        if len(front) > 1:
            ax.step([xs[i] for i in front], [y_of(ys[i]) for i in front], color=colour, lw=1.3, alpha=0.9,
                    where="pre" if spec.x.direction == "maximize" else "post", zorder=2)
        chosen = [i for i, p in enumerate(members) if p.selected]
        if chosen:
            ax.scatter([xs[i] for i in chosen], [y_of(ys[i]) for i in chosen], s=220, facecolors="none",
                       edgecolors="black", linewidths=1.6, zorder=4)
    markers = reference_markers([r for r, _, _ in ref_xy])
    for r, x, y in ref_xy:
        ax.scatter([x], [y_of(y)], marker=markers[r.label], s=260 if r.role == "target" else 150,
                   color="black" if r.role == "target" else "dimgray", edgecolors="white", linewidths=0.8, zorder=5)
    if spec.y.log:
        ax.set_yscale("log")
    if spec.x.log:
        ax.set_xscale("log")
    for r, x, y in ref_xy:
        _label_point(ax, r.label, x, y_of(y))
    if floor is not None and any(_value(p.metrics, spec.y) == 0 for p in shown):
        ax.axhline(floor, color="gray", lw=0.8, ls=":")
    bar = report.sweep.bar if report.sweep is not None and objective else None
    if finite(bar):
        ax.axvline(bar, color="gray", lw=1, ls="--", zorder=1)
    ax.set_xlabel(spec.x.label, fontsize=11)
    ax.set_ylabel(spec.y.label, fontsize=11)
    n = "trial" if report.sweep is not None else "run"
    ax.set_title(f"{spec.y.label.split(' (')[0]} vs {spec.x.label.split(' (')[0]} "
                 f"({len(shown)} {n}{'' if len(shown) == 1 else 's'})", fontsize=12)
    ax.grid(True, which="major", alpha=0.3)
    _tradeoff_legend(ax, shown, ref_xy, markers, finite(bar))
    notes = [f"better: {_arrow(spec.y, 'up', 'down')}, {_arrow(spec.x, 'right', 'left')}; "
             "step line: each cell's Pareto front"]
    if finite(bar):
        notes.append(f"dashed line: the utility bar ({bar:.4g}) of the selection rule")
    zeros = sum(_value(p.metrics, spec.y) == 0 for p in shown)
    if zeros:
        notes.append(f"{zeros} point(s) with {spec.y.metric} = 0 (underflow) drawn on the dotted floor line")
    if skipped:
        notes.append(f"{len(skipped)} {n}(s) without {spec.y.metric} or {spec.x.metric} not shown "
                     "(e.g. no retain model to compare with)")
    ax.annotate("\n".join(notes), xy=(0, -0.11), xycoords="axes fraction", va="top", fontsize=8.5, color="dimgray")
    return save(fig, out / spec.filename, dpi), ""


def _label_point(ax: Any, text: str, x: float, y: float) -> None:
    """A label beside a marker, turned inwards near the right / top edge so it stays inside
    the axes and clear of the legend."""
    fx, fy = ax.transAxes.inverted().transform(ax.transData.transform((x, y)))
    right, top = fx > 0.6, fy > 0.9
    ax.annotate(text, (x, y), xytext=(-9 if right else 9, -9 if top else 7), textcoords="offset points",
                ha="right" if right else "left", va="top" if top else "bottom", fontsize=10, zorder=6)


def _tradeoff_legend(ax: Any, shown: Sequence[Point], ref_xy: Sequence[Any], markers: Mapping[str, str],
                     bar: bool) -> None:
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    extra = [(Line2D([], [], color="gray", lw=1.3), "Pareto front (per cell)")]
    if any(p.selected for p in shown):
        extra.append((Line2D([], [], marker="o", ls="", markersize=12, markerfacecolor="none",
                             markeredgecolor="black", markeredgewidth=1.6), "selected (best.json)"))
    for r, _, _ in ref_xy:
        extra.append((Line2D([], [], marker=markers[r.label], ls="", markersize=11,
                             color="black" if r.role == "target" else "dimgray"), r.label))
    if bar:
        extra.append((Line2D([], [], color="gray", lw=1, ls="--"), "utility bar"))
    ax.legend(handles + [h for h, _ in extra], labels + [t for _, t in extra], loc="upper left",
              bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=9)
