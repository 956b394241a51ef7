"""The end of a sweep: the selection rule applied per (method, adapter) cell -> best.json,
a console table, and the W&B summary run (trials table + forget-vs-utility scatter)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from grun_cli.errors import GrunError
from grun_cli.io_utils import atomic_write_json
from grun_cli.sweep.records import BEST_FILE, cell
from grun_cli.sweep.select import (
    Objective,
    finite,
    meets_bar,
    pareto_front,
    rule_text,
    select_best,
    utility_bar,
)
from grun_cli.train.tracking import start_tracking

log = logging.getLogger(__name__)

RULES = ("utility_bar", "pareto")


def check_select(select: Mapping[str, Any]) -> tuple[str, float]:
    rule = str(select["rule"])
    if rule not in RULES:
        raise GrunError(f"select.rule={rule} is not one of {', '.join(RULES)}")
    try:
        min_utility = float(select["min_utility"])
    except (TypeError, ValueError):
        raise GrunError(f"select.min_utility={select.get('min_utility')}: give a number such as 0.9") from None
    if not 0 <= min_utility <= 10:
        raise GrunError(f"select.min_utility={min_utility}: give a fraction of the target's utility, e.g. 0.9")
    return rule, min_utility


def best(trials: Sequence[Mapping[str, Any]], objective: Mapping[str, Objective], select: Mapping[str, Any],
         target_metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    """best.json's content: the rule in words, the bar, and per cell the selected trial, its
    Pareto front (trial numbers) and the number of trials."""
    rule, min_utility = check_select(select)
    forget, utility = objective["forget"], objective["utility"]
    target = target_metrics or {}
    # an unlearn run's probe says after_<metric>; the target's evaluation says <metric>
    target_utility = target.get(utility.metric, target.get(utility.metric.removeprefix("after_")))
    bar = utility_bar(target_utility, min_utility, utility.direction) if rule == "utility_bar" else None
    cells: dict[str, Any] = {}
    for name in sorted({cell(t) for t in trials}):
        members = [t for t in trials if cell(t) == name]
        done = [t for t in members if t.get("status") == "complete"]
        points = [(forget.value(t["metrics"]), utility.value(t["metrics"])) for t in done]
        front = [int(done[i]["number"]) for i in pareto_front(points, (forget.direction, utility.direction))]
        chosen, reason = select_best(members, forget, utility, bar)
        cells[name] = {
            "selected": int(chosen["number"]) if chosen is not None else None, "reason": reason,
            "pareto": sorted(front), "trials": len(members), "complete": len(done),
            "failed": sum(t.get("status") == "failed" for t in members),
            "interrupted": sum(t.get("status") == "interrupted" for t in members),
            "metrics": dict(chosen["metrics"]) if chosen is not None else None,
            "params": dict(chosen.get("params") or {}) if chosen is not None else None,
            "bar_sides": bar_sides(done, utility, bar),
        }
    text = (rule_text(forget, utility, min_utility, target_utility, bar) if rule == "utility_bar" else
            f"Pareto front of ({forget.metric}, {utility.metric}) over complete trials; `selected` is the front's "
            f"best {forget.metric}")
    return {"rule": text, "select": {"rule": rule, "min_utility": min_utility},
            "objective": {k: vars(v) for k, v in objective.items()},
            "target_utility": target_utility if finite(target_utility) else None, "bar": bar, "cells": cells}


def bar_sides(done: Sequence[Mapping[str, Any]], utility: Objective, bar: float | None) -> dict[str, Any] | None:
    """How the cell's complete trials sit around the utility bar: how many on each side and the
    utility nearest the bar on each. A space whose trials all land on one side did not reach the
    bar (all above: nothing was pushed as far as the bar allows, and the selected trial may hardly
    have unlearned; all below: every trial broke the model), so the cell was not tuned fairly:
    widen its space and rerun it."""
    if bar is None:
        return None
    values = [u for u in (utility.value(t.get("metrics") or {}) for t in done) if finite(u)]
    meets = [u for u in values if meets_bar(u, bar, utility.direction)]
    misses = [u for u in values if not meets_bar(u, bar, utility.direction)]
    # nearest the bar: the lowest that meets it and the highest that misses it (maximised utility)
    edge_meeting, edge_missing = (min, max) if utility.direction == "maximize" else (max, min)
    return {"meet": len(meets), "miss": len(misses),
            "nearest_meeting": edge_meeting(meets) if meets else None,
            "nearest_missing": edge_missing(misses) if misses else None,
            "reached": bool(meets and misses)}


def bar_line(name: str, sides: Mapping[str, Any] | None, bar: float | None) -> str | None:
    """The console's line for a cell whose every complete trial met the bar (when none did, the
    cell's "no trial reached ..." already says so)."""
    if not sides or bar is None or sides["miss"] or not sides["meet"]:
        return None
    return (f"  {name}: every complete trial meets the utility bar {bar:.4g} (nearest {_fmt(sides['nearest_meeting'])}): "
            "the space never pushed unlearning as far as the bar allows; widen it (larger lr or more epochs) "
            "and rerun this cell")


def write_best(sweep_dir: Path, content: Mapping[str, Any]) -> Path:
    path = Path(sweep_dir) / BEST_FILE
    atomic_write_json(path, content)
    return path


def _fmt(x: Any) -> str:
    if not finite(x):
        return "-" if x is None else str(x)
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e4):
        return f"{x:.2e}"
    return f"{x:.4g}"


def console_table(trials: Sequence[Mapping[str, Any]], content: Mapping[str, Any]) -> str:
    """Every trial, one line each, the selected ones starred, then the rule."""
    forget = content["objective"]["forget"]["metric"]
    utility = content["objective"]["utility"]["metric"]
    selected = {(n, c["selected"]) for n, c in content["cells"].items()}
    keys = sorted({k for t in trials for k in (t.get("params") or {})})
    header = ["", "trial", "cell", "status", forget, utility, *keys, "wall s"]
    rows = [header]
    for t in sorted(trials, key=lambda t: int(t["number"])):
        m = t.get("metrics") or {}
        star = "*" if (cell(t), t["number"]) in selected else ""
        rows.append([star, str(t["number"]), cell(t), t.get("status", "?"), _fmt(m.get(forget)), _fmt(m.get(utility)),
                     *[str((t.get("params") or {}).get(k, "")) for k in keys], _fmt(t.get("wall_time_s"))])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.append(f"selection: {content['rule']}")
    for name, c in content["cells"].items():
        lines.append(f"  {name}: " + (f"trial {c['selected']} ({c['trials']} trials)" if c["selected"] is not None
                                      else f"none: {c['reason']} ({c['trials']} trials)"))
        sides = c.get("bar_sides")
        if sides and sides["meet"] and sides["miss"]:
            meet, miss = sides["meet"], sides["miss"]
            lines.append(f"    utility bar {content['bar']:.4g}: {meet} trial{'s meet' if meet > 1 else ' meets'} it "
                         f"(nearest {_fmt(sides['nearest_meeting'])}), {miss} trial{'s miss' if miss > 1 else ' misses'} "
                         f"it (nearest {_fmt(sides['nearest_missing'])})")
        warning = bar_line(name, sides, content.get("bar")) if content.get("finished", True) else None
        if warning:
            lines.append(warning)
    failed = [t for t in trials if t.get("status") != "complete"]
    for t in failed:
        lines.append(f"  trial {t['number']} {t.get('status')}: {t.get('reason')}")
    return "\n".join(lines)


def log_to_wandb(logger_cfg: Mapping[str, Any], sweep_dir: Path, config: Mapping[str, Any],
                 trials: Sequence[Mapping[str, Any]], content: Mapping[str, Any]) -> None:
    """One summary run in the sweep's W&B group: the trials table, the scatter, best.json."""
    group = logger_cfg.get("group") or f"sweep-{Path(sweep_dir).name}"
    tracker = start_tracking({**logger_cfg, "group": group, "job_type": "sweep"}, Path(sweep_dir), config,
                             job_type="sweep", name=f"{group}-summary")
    if tracker.run is None:
        return
    forget = content["objective"]["forget"]["metric"]
    utility = content["objective"]["utility"]["metric"]
    keys = sorted({k for t in trials for k in (t.get("params") or {})})
    tracker.table("trials", ["trial", "cell", "status", forget, utility, *keys, "wall_time_s", "reason"], [
        [t["number"], cell(t), t.get("status"), (t.get("metrics") or {}).get(forget),
         (t.get("metrics") or {}).get(utility), *[(t.get("params") or {}).get(k) for k in keys],
         t.get("wall_time_s"), t.get("reason")] for t in trials])
    scatter = Path(sweep_dir) / "forget_quality_vs_utility.png"
    if scatter.is_file():
        tracker.image("forget_vs_utility", scatter)
    tracker.summary({f"{name}/selected": c["selected"] for name, c in content["cells"].items()})
    tracker.finish()
