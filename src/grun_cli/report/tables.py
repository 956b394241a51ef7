"""The paper's table layout, written three ways from the same columns: report.md (to read and
paste), report.tex (booktabs, to \\input), report.csv (raw numbers, to compute with).

md and tex show each number formatted the way papers print it; csv keeps full precision.
A run set with TOFU and WMDP runs gets one table per kind (md sections, tex tabulars) and one
csv with a ``kind`` column whose metric columns are the union of both layouts.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grun_cli.report.collect import ABSENT, Report, Row, metric


# -- number formats -----------------------------------------------------------------------
def fmt_sci(x: float) -> str:
    """Forget quality spans hundreds of decades: one significant decimal and the exponent,
    as papers print it (2.2e-17; 0 when the p-value underflowed)."""
    if x == 0:
        return "0"
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def fmt_fixed(x: float) -> str:
    return f"{x:.3f}"


def fmt_int(x: float) -> str:
    return str(int(x))


def fmt_params(count: float, percent: Any = ABSENT) -> str:
    """Trainable parameters and their share of the base model: 101,130 (7.51%)."""
    text = f"{int(count):,}"
    if isinstance(percent, (int, float)) and math.isfinite(percent):
        text += f" ({percent:.3g}%)"
    return text


def fmt_time(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class Column:
    """A table column: its header, the metrics.json keys it shows (csv has one column per
    key) and how md / tex print them."""

    title: str
    keys: tuple[str, ...]
    fmt: Callable[..., str] = fmt_fixed

    def cell(self, metrics: Mapping[str, Any]) -> str:
        values = [metric(metrics, k) for k in self.keys]
        first = values[0]
        if first is ABSENT:
            return "-"
        if first is None:
            return "n/a"
        if not isinstance(first, (int, float)) or isinstance(first, bool):
            return str(first)
        if not math.isfinite(first):
            return str(first)
        return self.fmt(*values)


_SHARED = (Column("gate AUC", ("gate_auc",)),
           Column("params", ("trainable_parameters", "trainable_percent"), fmt_params),
           Column("steps", ("train_steps",), fmt_int),
           Column("wall time", ("wall_time_s",), fmt_time))

COLUMNS: dict[str, tuple[Column, ...]] = {
    "tofu": (Column("forget quality", ("forget_quality",), fmt_sci),
             Column("model utility", ("model_utility",)),
             Column("forget ROUGE", ("forget_Q_A_ROUGE",)),
             Column("forget Prob", ("forget_Q_A_Prob",)),
             Column("forget TR", ("forget_truth_ratio",)),
             *_SHARED),
    "wmdp": (Column("WMDP-bio", ("wmdp_bio_acc",)),
             Column("WMDP-cyber", ("wmdp_cyber_acc",)),
             Column("MMLU", ("mmlu_acc",)),
             Column("forget NLL", ("forget_text_nll",)),
             Column("retain NLL", ("retain_text_nll",)),
             *_SHARED),
}
TITLES = {"tofu": "TOFU", "wmdp": "WMDP"}
LEGENDS = {
    "tofu": "forget quality: KS-test p-value of the forget truth ratios against the retain model's "
            "(higher = closer to a model that never saw the forget set); model utility: harmonic mean "
            "of the retain / real-authors / world-facts Prob, ROUGE and truth ratio; forget ROUGE, "
            "Prob, TR: ROUGE-L recall, answer probability and truth ratio on the forget set",
    "wmdp": "WMDP-bio, WMDP-cyber, MMLU: zero-shot accuracy (lm-eval); forget / retain NLL: mean "
            "token NLL of the held-out forget / retain texts after unlearning (higher forget NLL = "
            "more forgotten, lower retain NLL = more kept)",
}
SHARED_LEGEND = ("gate AUC: ROC AUC of the GRUN gate separating forget prompts from the others; "
                 "params: trainable parameters (% of the base model); \"-\": not measured; "
                 "\"n/a\": not available (e.g. forget quality without a retain model)")
ID_FIELDS = ("label", "kind", "method", "adapter", "role", "trial", "run_dir", "note")


def kind_rows(report: Report, kind: str) -> list[Row]:
    return [r for r in report.rows if r.kind == kind]


def cells(row: Row, kind: str) -> list[str]:
    """The formatted cells of one row (the note in the first one when the row has no numbers)."""
    if row.note is not None:
        return [row.note] + [""] * (len(COLUMNS[kind]) - 1)
    return [c.cell(row.metrics) for c in COLUMNS[kind]]


# -- markdown -----------------------------------------------------------------------------
def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(rows: Sequence[Row], kind: str) -> str:
    header = ["run", *(c.title for c in COLUMNS[kind])]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([":---", *(["---:"] * len(COLUMNS[kind]))]) + "|"]
    lines += ["| " + " | ".join(_md_escape(x) for x in [r.label, *cells(r, kind)]) + " |" for r in rows]
    return "\n".join(lines)


def _sweep_lines(report: Report) -> list[str]:
    s = report.sweep
    if s is None:
        return []
    lines = [f"Sweep `{s.folder}`" + ("" if s.finished else " (not finished: the selection so far)") + ".", "",
             f"- selection rule: {s.rule}", f"- budget: {s.budget()}"]
    params = {t.get("number"): t.get("params") or {} for t in s.trials}
    for name, c in sorted(s.cells.items()):
        chosen = c.get("selected")
        front = ", ".join(str(n) for n in c.get("pareto") or []) or "none"
        if chosen is None:
            what = "none selected"
        else:
            hp = " ".join(f"{k}={v}" for k, v in params.get(chosen, {}).items())
            what = f"trial {chosen} selected" + (f" ({hp})" if hp else "")
        lines.append(f"- {name}: {what}; {c.get('trials', '?')} trials, Pareto front: {front}")
    return [*lines, ""]


def markdown(report: Report) -> str:
    out = ["# grun report", "", *_sweep_lines(report)]
    for kind in report.kinds():
        out += [f"## {TITLES[kind]}", "", markdown_table(kind_rows(report, kind), kind), "",
                f"{LEGENDS[kind]}; {SHARED_LEGEND}.", ""]
    out += ["## Runs", ""]
    for r in report.rows:
        where = f"`{r.folder}`" if r.folder is not None else "(no trial selected)"
        out.append(f"- {_md_escape(r.label)}: {where}" + (f" (trial {r.trial})" if r.trial is not None else ""))
    return "\n".join(out) + "\n"


# -- LaTeX --------------------------------------------------------------------------------
_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)


def latex_table(rows: Sequence[Row], kind: str) -> str:
    columns = COLUMNS[kind]
    lines = [f"% {TITLES[kind]}: {tex_escape(LEGENDS[kind])}", r"% needs \usepackage{booktabs}",
             r"\begin{tabular}{l" + "r" * len(columns) + "}", r"\toprule",
             " & ".join(tex_escape(t) for t in ["run", *(c.title for c in columns)]) + r" \\", r"\midrule"]
    previous: Row | None = None
    for r in rows:
        if previous is not None and previous.is_reference and not r.is_reference:
            lines.append(r"\midrule")
        if r.note is not None:
            body = rf"\multicolumn{{{len(columns)}}}{{l}}{{\emph{{{tex_escape(r.note)}}}}}"
        else:
            body = " & ".join(tex_escape(x) for x in cells(r, kind))
        lines.append(f"{tex_escape(r.label)} & {body} " + r"\\")
        previous = r
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


def latex(report: Report) -> str:
    head = ["% grun report"]
    if report.sweep is not None:
        head += [f"% selection rule: {tex_escape(report.sweep.rule)}",
                 f"% budget: {tex_escape(report.sweep.budget())}"]
    return "\n\n".join(["\n".join(head), *(latex_table(kind_rows(report, k), k) for k in report.kinds())]) + "\n"


# -- CSV ----------------------------------------------------------------------------------
def csv_keys(kinds: Sequence[str]) -> list[str]:
    keys: list[str] = []
    for kind in kinds:
        keys += [k for c in COLUMNS[kind] for k in c.keys if k not in keys]
    return keys


def _raw(value: Any) -> Any:
    return "" if value is ABSENT or value is None else value


def csv_text(report: Report) -> str:
    keys = csv_keys(report.kinds())
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*ID_FIELDS, *keys])
    for r in report.rows:
        ids = [r.label, r.kind, r.method, r.adapter, r.role, r.trial, r.folder, r.note]
        writer.writerow([_raw(x) for x in ids] + [_raw(metric(r.metrics, k)) for k in keys])
    return buf.getvalue()


def write_tables(report: Report, out: Path) -> dict[str, Path]:
    """report.md, report.tex and report.csv in ``out`` (each written atomically)."""
    from grun_cli.io_utils import atomic_write_text

    written = {}
    for name, text in (("md", markdown(report)), ("tex", latex(report)), ("csv", csv_text(report))):
        path = out / f"report.{name}"
        atomic_write_text(path, text)
        written[name] = path
    return written
