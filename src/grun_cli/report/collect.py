"""Run folders and sweep directories -> report rows (one per table line) and trial points
(one per dot on the trade-off plot).

Everything is checked here, before any table or plot is written: a missing folder, an empty
glob or a run that did not complete ends in one GrunError naming the folder and the fix.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grun_cli.errors import GrunError

#: Markers a run leaves when it did not finish (the CLI writes FAILED; a sweep may write
#: INTERRUPTED): such a folder may still hold partial files that look like results.
INCOMPLETE_MARKERS = ("FAILED", "INTERRUPTED")
#: Metrics only an lm-eval (WMDP / MMLU) or text-corpus run has.
WMDP_KEYS = ("lm_eval_seconds", "wmdp_bio_acc", "forget_text_nll", "after_forget_text_nll")
NO_TRIAL_MET_BAR = "no trial met the utility bar"


class _Absent:
    """A metric the run never measured (shown "-"), unlike a measured None (shown "n/a")."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


def metric(metrics: Mapping[str, Any], key: str) -> Any:
    """``metrics[key]``, else its other name, else ABSENT: an unlearn run's probe stores the
    held-out NLLs after training as ``after_<key>``, `grun eval` as ``<key>``."""
    if key in metrics:
        return metrics[key]
    other = key.removeprefix("after_") if key.startswith("after_") else f"after_{key}"
    return metrics.get(other, ABSENT)


def kind_of(metrics: Mapping[str, Any]) -> str:
    """"wmdp" for lm-eval / text-corpus runs, else "tofu": which table a run belongs to."""
    return "wmdp" if any(k in metrics for k in WMDP_KEYS) else "tofu"


@dataclass
class Row:
    """One table line: an unlearn run (labelled method/adapter) or a reference model."""

    label: str
    kind: str
    metrics: dict[str, Any]
    folder: Path | None = None
    method: str | None = None
    adapter: str | None = None
    role: str | None = None  # target / retain / ... for reference rows
    note: str | None = None  # replaces the numbers (a sweep cell with no selected trial)
    trial: int | None = None

    @property
    def is_reference(self) -> bool:
        return self.role is not None


@dataclass
class Point:
    """One trial on the trade-off plot."""

    cell: str
    adapter: str | None
    metrics: Mapping[str, Any]
    selected: bool = False
    number: int | None = None


@dataclass
class SweepInfo:
    """What makes a sweep's table fair to read: the rule that picked each row and the budget."""

    folder: Path
    rule: str
    objective: dict[str, Any]
    bar: float | None
    cells: dict[str, dict[str, Any]]
    trials: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = True  # false: best.json was written by a trial of a sweep still running (or killed)

    def budget(self) -> str:
        # the budget is what ran to an end (complete or failed); an interrupted trial is re-run
        counts = {c: int(v["complete"]) + int(v.get("failed", 0)) if "complete" in v else int(v.get("trials", 0))
                  for c, v in self.cells.items()}
        done = sum(t.get("status") == "complete" for t in self.trials)
        stopped = sum(t.get("status") == "interrupted" for t in self.trials)
        total = f"{len(self.trials)} trials in all, {done} complete" + (
            f", {stopped} interrupted and re-run" if stopped else "")
        if len(set(counts.values())) == 1:
            return f"{next(iter(counts.values()))} trials per (method, adapter) cell ({total})"
        return "trials per cell: " + ", ".join(f"{c} {n}" for c, n in counts.items()) + f" ({total})"


@dataclass
class Report:
    rows: list[Row]
    points: list[Point]
    sweep: SweepInfo | None = None

    def kinds(self) -> list[str]:
        return [k for k in ("tofu", "wmdp") if any(r.kind == k for r in self.rows)]


# -- reading one run folder ---------------------------------------------------------------
def _first_line(path: Path) -> str:
    text = path.read_text(errors="replace").strip()
    return text.splitlines()[0] if text else ""


def check_complete(folder: Path, what: str) -> None:
    """Refuse a folder that is not a complete run (``what`` names the config key it came from)."""
    if not folder.exists():
        raise GrunError(f"{what}: {folder} does not exist; give a `grun unlearn` or `grun eval` run folder")
    if not folder.is_dir():
        raise GrunError(f"{what}: {folder} is a file; give a run folder (the one holding run_card.json)")
    for marker in INCOMPLETE_MARKERS:
        if (folder / marker).is_file():
            why = _first_line(folder / marker)
            raise GrunError(f"{what}: {folder} is not a complete run ({marker}"
                            + (f": {why}" if why else "") + "); rerun it, or leave it out"
                            " (skip_incomplete=true skips such folders)")
    if not (folder / "run_card.json").is_file():
        hint = ("it is a sweep directory: use sweep_dir=" if (folder / "best.json").is_file() or
                (folder / "sweep.json").is_file() else "wait for it to finish, copy the whole run folder, "
                "or leave it out (skip_incomplete=true skips such folders)")
        raise GrunError(f"{what}: {folder} is not a complete run (no run_card.json); {hint}")
    if not (folder / "metrics.json").is_file():
        raise GrunError(f"{what}: {folder} has run_card.json but no metrics.json; copy the whole run folder")


def is_complete(folder: Path) -> bool:
    try:
        check_complete(folder, "runs")
    except GrunError:
        return False
    return True


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise GrunError(f"{path} is not valid JSON ({e.msg}); copy the file again from the run") from e


def model_name(card: Mapping[str, Any]) -> str:
    """A short name for an evaluated model: its checkpoint or Hub id, else the config's name."""
    model = (card.get("config") or {}).get("model") or {}
    path = model.get("name_or_path")
    if not path:
        return str(model.get("name") or "unknown")
    p = Path(str(path))
    return f"{p.parent.name}/{p.name}" if p.name == "checkpoint" else str(path)


def read_run(folder: Path, what: str = "runs") -> Row:
    """The row of one complete run folder (`grun unlearn`, or `grun eval` of a model / a run)."""
    from grun_cli.integrity import verify

    check_complete(folder, what)
    card = _read_json(folder / "run_card.json")
    verify(folder, card.get("files"), "run_card.json")  # a report never shows a damaged run's numbers
    metrics = _read_json(folder / "metrics.json")
    command = card.get("command")
    kind = kind_of(metrics)
    if command == "unlearn":
        method, adapter = card.get("method"), card.get("adapter_kind")
        return Row(f"{method}/{adapter}", kind, metrics, folder, method=method, adapter=adapter)
    if command == "eval":
        role = card.get("role")
        evaluated = (card.get("model") or {}).get("run")
        if evaluated and not role:  # `grun eval run=<unlearn run>`: that run, evaluated again
            adapter = (card.get("model") or {}).get("adapter")
            return Row(f"eval of {Path(str(evaluated)).name}", kind, metrics, folder, adapter=adapter)
        return Row(str(role or f"model {model_name(card)}"), kind, metrics, folder, role=str(role or "model"))
    raise GrunError(f"{what}: {folder} is a `grun {command}` run; give `grun unlearn` or `grun eval` runs "
                    f"(evaluate it first: grun eval run={folder})")


# -- runs= --------------------------------------------------------------------------------
def expand(patterns: Iterable[str], what: str = "runs", exclude: Path | None = None) -> list[Path]:
    """Folders named by ``patterns`` (globs allowed), in the order given, each once. A glob
    never matches ``exclude`` (the report's own folder, which exists by the time it runs)."""
    out: list[Path] = []
    skip = exclude.resolve() if exclude is not None else None
    for pattern in patterns:
        if glob.has_magic(pattern):
            found = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_dir() and Path(p).resolve() != skip)
            if not found:
                raise GrunError(f"{what}: {pattern} matches no folder; check the pattern "
                                f"(quote it, e.g. '{what}=[{pattern}]', so the shell leaves it to grun)")
        else:
            found = [Path(pattern)]
        out.extend(p for p in found if p not in out)
    return out


def order(rows: Sequence[Row]) -> list[Row]:
    """Reference rows first (target, retain, others), then the runs in the order given; a
    label shared by several runs gets the run folder's name, so every line is traceable."""
    rank = {"target": 0, "retain": 1}
    refs = sorted((r for r in rows if r.is_reference), key=lambda r: rank.get(r.role or "", 2))
    ordered = [*refs, *(r for r in rows if not r.is_reference)]
    labels = [r.label for r in ordered]
    for r in ordered:
        if labels.count(r.label) > 1 and r.folder is not None:
            r.label = f"{r.label} ({r.folder.name})"
    return ordered


def from_runs(patterns: Sequence[str], skip_incomplete: bool = False, exclude: Path | None = None) -> Report:
    folders = expand(patterns, exclude=exclude)
    if skip_incomplete:
        folders = [f for f in folders if is_complete(f)]
        if not folders:
            raise GrunError(f"runs={list(patterns)}: no complete run among them; give run folders "
                            "that hold run_card.json")
    rows = order([read_run(f) for f in folders])
    points = [Point(r.label if r.method is None else f"{r.method}/{r.adapter}", r.adapter, r.metrics)
              for r in rows if not r.is_reference]
    return Report(rows, points)


# -- sweep_dir= ----------------------------------------------------------------------------
def read_trial_records(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every trial: from the trial folders (their trial.json), else from trials.jsonl (a sweep
    copied without its trial folders still plots)."""
    from grun_cli.io_utils import read_jsonl
    from grun_cli.sweep.records import TRIALS_FILE, read_trials

    trials = read_trials(sweep_dir)
    if not trials and (sweep_dir / TRIALS_FILE).is_file():
        trials = read_jsonl(sweep_dir / TRIALS_FILE)
    return trials


def _cell_note(cell: Mapping[str, Any], members: Sequence[Mapping[str, Any]]) -> str:
    if int(cell.get("complete", sum(t.get("status") == "complete" for t in members))) == 0:
        return f"no complete trial ({int(cell.get('trials', len(members)))} failed or interrupted)"
    return NO_TRIAL_MET_BAR


def from_sweep(sweep_dir: Path) -> Report:
    """The selected trial of each (method, adapter) cell as named in best.json, plus the
    reference rows under references/; every complete trial as a point."""
    from grun_cli.sweep.records import BEST_FILE, cell, read_sweep

    if not sweep_dir.is_dir():
        raise GrunError(f"sweep_dir: {sweep_dir} does not exist; give the folder `grun sweep` wrote "
                        "(outputs/sweep/<timestamp>)")
    if not (sweep_dir / BEST_FILE).is_file():
        raise GrunError(f"sweep_dir: {sweep_dir} has no {BEST_FILE}, so it is not a finished `grun sweep`; "
                        "let the sweep finish, or report its trial folders with runs=")
    best = _read_json(sweep_dir / BEST_FILE)
    sweep = read_sweep(sweep_dir)
    trials = read_trial_records(sweep_dir)
    by_number = {int(t["number"]): t for t in trials if t.get("number") is not None}
    cells: dict[str, dict[str, Any]] = best.get("cells") or {}
    if not cells:
        raise GrunError(f"sweep_dir: {sweep_dir}/{BEST_FILE} names no (method, adapter) cell: the sweep ran "
                        "no trial; run it again")
    objective = best.get("objective") or sweep.get("objective") or {}
    rows: list[Row] = []
    for name in sorted(cells):
        chosen = cells[name].get("selected")
        method, _, adapter = name.partition("/")
        members = [t for t in trials if cell(t) == name]
        if chosen is None:
            kinds = [kind_of(t.get("metrics") or {}) for t in members if t.get("status") == "complete"]
            kind = kinds[0] if kinds else kind_of({str(v.get("metric")): 0 for v in objective.values()})
            rows.append(Row(name, kind, {}, method=method, adapter=adapter, note=_cell_note(cells[name], members)))
            continue
        record = by_number.get(int(chosen), {})
        row = read_run(sweep_dir / str(record.get("run_dir", chosen)), f"sweep_dir (trial {chosen} of {name})")
        row.label, row.trial = name, int(chosen)
        rows.append(row)
    refs = sweep_dir / "references"
    for folder in sorted(p for p in refs.iterdir() if p.is_dir()) if refs.is_dir() else []:
        row = read_run(folder, "sweep_dir (references)")
        row.role = row.role if row.role not in (None, "model") else folder.name
        row.label = row.role
        rows.append(row)
    selected = {int(c["selected"]) for c in cells.values() if c.get("selected") is not None}
    points = [Point(cell(t), t.get("adapter"), t.get("metrics") or {}, int(t["number"]) in selected,
                    int(t["number"]))
              for t in trials if t.get("status") == "complete" and t.get("number") is not None]
    info = SweepInfo(sweep_dir, str(best.get("rule") or "not stated in best.json"), dict(objective),
                     best.get("bar"), cells, trials, finished=bool(best.get("finished", True)))
    return Report(order(rows), points, info)
