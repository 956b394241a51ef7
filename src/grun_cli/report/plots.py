"""The report's figures (matplotlib, headless Agg), each in its own module: the trade-off
plot (tradeoff.py), training curves (curves.py), gate distributions (gate_plots.py), metrics
after each request of sequential runs (sequence_plot.py), metrics along training (steps_plot.py). Each
returns the PNG it wrote, or None with the reason it skipped."""

from __future__ import annotations

from pathlib import Path

from grun_cli.report.collect import Report, from_sweep, kind_of
from grun_cli.report.curves import training_curves
from grun_cli.report.figure import DPI
from grun_cli.report.gate_plots import gate_distributions
from grun_cli.report.sequence_plot import sequence_plot
from grun_cli.report.steps_plot import steps_plot
from grun_cli.report.tradeoff import tradeoff_plot


def make_plots(report: Report, out: Path, *, dpi: int = DPI) -> tuple[list[Path], list[str]]:
    """Every figure the report's runs support; the reasons for those skipped."""
    written, skipped = [], []
    results = [tradeoff_plot(report, kind, out, dpi=dpi) for kind in report.kinds()]
    results += [training_curves(report.rows, out, dpi=dpi), gate_distributions(report.rows, out, dpi=dpi),
                sequence_plot(report.rows, out, dpi=dpi), steps_plot(report.rows, out, dpi=dpi)]
    for path, why in results:
        if path is not None:
            written.append(path)
        elif why:
            skipped.append(why)
    return written, skipped


def sweep_scatter(sweep_dir: Path, path: Path, *, dpi: int = DPI) -> Path | None:
    """The trade-off plot of a finished sweep directory, written to ``path`` (for `grun sweep`)."""
    report = from_sweep(Path(sweep_dir))
    objective = report.sweep.objective if report.sweep is not None else {}
    kind = kind_of({str(v.get("metric")): 0 for v in objective.values()}) if objective else report.kinds()[0]
    written, _ = tradeoff_plot(report, kind, path.parent, dpi=dpi)
    if written is not None and written != path:
        written.replace(path)
        return path
    return written
