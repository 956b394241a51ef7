"""`grun repro`: rerun the reproduced tables (experiments/<table>/) and check them.

Everything a table needs (its table.yaml, the experiment configs it names, its expected file
and claims, its data) is checked before the first run starts (``repro/plan.py``); then every
cell runs through the real `grun unlearn` (``repro/runner.py``), `grun report` builds the
tables and plots, and each number and claim gets one line (``repro/verdicts.py``): ok, drifted
(better than recorded) or failed. Exit status 1 on a failure.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from grun_cli.commands.context import run_dir
from grun_cli.errors import GrunError
from grun_cli.io_utils import atomic_write_json
from grun_cli.runtime import as_list

log = logging.getLogger("grun.repro")


def repro(cfg: DictConfig) -> dict[str, Any]:
    from grun_cli.repro.expected import DRIFTED, FAILED, OK
    from grun_cli.repro.manifest import CPU_SCALES, SCALES, find_tables
    from grun_cli.repro.plan import (
        check_experiments,
        check_update,
        parse_seeds,
        plan_paper,
        plan_tables,
    )
    from grun_cli.repro.runner import (
        describe_machine,
        efficiency_shapes,
        run_efficiency,
        run_table,
        step_shapes,
        warm_targets,
    )
    from grun_cli.repro.verdicts import table_verdicts, write_expected

    scale = str(cfg.scale)
    if scale not in SCALES:
        raise GrunError(f"scale={scale}: choose one of {', '.join(SCALES)}")
    seeds = parse_seeds(cfg.seeds)
    update, do_check = bool(cfg["update"]), bool(cfg["check"])
    if int(cfg.repeats) < 1:
        raise GrunError(f"repeats={cfg.repeats}: give 1 or more")
    if str(cfg.jobs) == "auto":  # CPU scale: a cell per core; paper scale: one 7-8B run per GPU at a time
        jobs = int(os.cpu_count() or 1) if scale in CPU_SCALES else 1
    else:
        jobs = int(cfg.jobs)
    threads = int(cfg.threads)
    if jobs < 1 or threads < 1:
        raise GrunError(f"jobs={cfg.jobs} threads={cfg.threads}: give 1 or more (jobs=auto: one per core)")
    root = Path(str(cfg.root))
    tables = find_tables(root, [str(t) for t in as_list(cfg.tables)])
    if scale == "ci":  # a table too long for CI lists only cells.cpu: `make repro-cpu` runs it
        cpu_only = {t.name for t in tables if t.kind != "efficiency" and not t.cells.get("ci")}
        for name in sorted(cpu_only):
            print(f"{name}: no cells.ci (a table for `make repro-cpu`, scale=cpu); not run at scale=ci")
        if cpu_only and cpu_only == {t.name for t in tables}:
            raise GrunError(f"tables={[t.name for t in tables]}: no cells.ci (too long for CI); run with scale=cpu")
        tables = [t for t in tables if t.name not in cpu_only]
    if scale == "paper":
        tables = [t for t in tables if "paper" in t.cells]
        if not tables:
            raise GrunError("no table has cells.paper; nothing to run at paper scale")
    only = {str(c) for c in as_list(cfg.get("cells"))}
    if only:
        known = {c.name for t in tables for c in t.cells.get(scale, [])}
        if only - known:
            raise GrunError(f"cells={sorted(only - known)}: not a cell of {', '.join(t.name for t in tables)} at "
                            f"scale={scale}; choose among {', '.join(sorted(known))}")
        tables = [t.only(scale, only) for t in tables if t.kind != "efficiency"]
        tables = [t for t in tables if t.cells.get(scale)]
    check_experiments(tables, scale)
    if update:
        check_update(tables, scale, seeds, int(cfg.repeats))
    extra = [str(o) for o in as_list(cfg.overrides)]
    plan, missing = plan_tables(tables, scale, do_check, update, bool(cfg.allow_partial))
    if scale == "paper":
        import torch

        print(plan_paper([p.table for p in plan]))
        if not torch.cuda.is_available():
            raise GrunError("scale=paper trains 7-8B models: run it on a GPU machine (make repro-paper there)")
        if cfg.confirm:
            if not sys.stdin.isatty():
                raise GrunError("scale=paper needs a confirmation: add confirm=false to start without one")
            if input("start? [y/N] ").strip().lower() not in ("y", "yes"):
                raise GrunError("not started")

    out = run_dir()
    started = time.time()
    verdicts: list[dict[str, Any]] = []
    tables_done: dict[str, Any] = {}
    warming = None
    for index, planned in enumerate(plan):
        table, data, expected = planned.table, planned.data, planned.expected
        print(f"{table.name}: {table.title}" + (f" (data={data})" if data else ""))
        later = plan[index + 1:]
        if warming is None and table.kind != "efficiency" and jobs >= 2 and scale in CPU_SCALES \
                and not any(p.table.kind == "efficiency" for p in later):
            # (never while the efficiency table runs: its step times want a quiet machine)
            warming = warm_targets([(p.table, p.data) for p in later], scale, seeds[0], extra, threads) or False
        left_out = table.not_run(scale)  # scale=ci: the cells only scale=cpu runs
        partial = bool(only or left_out)  # part of the table runs: numbers and claims of what ran
        if table.kind == "efficiency":
            result = run_efficiency(table, root.resolve().parent, out, int(cfg.repeats), scale=scale)
            skipped = set(step_shapes(table.settings.get("step_shapes", []))) - set(efficiency_shapes(table, scale))
            left_out |= {k for k in (expected or {}).get("numbers", {}) if k.split("/")[0] in skipped}
            partial = partial or bool(skipped)
        else:
            result = run_table(table, scale, seeds, out, data, extra, jobs=jobs, threads=threads)
        if update:
            expected = write_expected(table, data, result, expected, partial, seeds, int(cfg.repeats))
        observed = result.averaged()
        verdicts += table_verdicts(table, result, observed, expected, planned.claims, scale=scale, only=only,
                                   left_out=left_out, partial=partial, do_check=do_check)
        tables_done[table.name] = {"data": data, "seconds": round(result.seconds, 1),
                                   "report": str(result.report) if result.report else None, "rows": observed}
    if warming:
        warming.join()  # done long before: the table that needed its target waited for it
    counts = {s: sum(v["status"] == s for v in verdicts) for s in (OK, DRIFTED, FAILED)}
    print("")
    order = {OK: 0, DRIFTED: 1, FAILED: 2}  # failures last: the tail of a CI log names them
    for v in sorted(verdicts, key=lambda v: order.get(v["status"], 3)):
        print(f"{v['status']:<8}{v['table']:<16}{v['what']}: {v['text']}")
    summary = (f"repro: {counts[OK]} ok, {counts[DRIFTED]} drifted, {counts[FAILED]} failed "
               f"({time.time() - started:.0f} s; {out})")
    if missing:
        summary += f"\nrepro: PARTIAL (allow_partial=true): not checked: {', '.join(missing)} (no data here)"
    print(summary)
    atomic_write_json(out / "repro.json", {"scale": scale, "seeds": seeds, "counts": counts, "verdicts": verdicts,
                                           "tables": tables_done, "machine": describe_machine(),
                                           "seconds": round(time.time() - started, 1)})
    if counts[FAILED] and do_check:
        raise SystemExit(1)
    return {"counts": counts}
