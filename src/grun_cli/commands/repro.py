"""`grun repro`: rerun the reproduced tables (experiments/<table>/) and check them.

Everything a table needs (its table.yaml, the experiment configs it names, its expected file
and claims, its data) is checked before the first run starts; then every cell runs through
the real `grun unlearn`, `grun report` builds the tables and plots, and each number and claim
gets one line: ok, drifted (better than recorded) or failed. Exit status 1 on a failure.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from grun_cli.commands.context import run_dir
from grun_cli.errors import GrunError
from grun_cli.io_utils import atomic_write_json
from grun_cli.runtime import as_list

log = logging.getLogger("grun.repro")

MIN_SEEDS_FOR_UPDATE = 3


def _seeds(value: Any) -> list[int]:
    seeds = as_list(value)
    try:
        out = [int(s) for s in seeds]
    except (TypeError, ValueError):
        raise GrunError(f"seeds={seeds}: give whole numbers, e.g. seeds=[42] or seeds=[42,1,2]") from None
    if not out or len(set(out)) != len(out):
        raise GrunError(f"seeds={seeds}: give one or more distinct seeds, e.g. seeds=[42,1,2]")
    return out


def _check_experiments(tables: Sequence[Any], scale: str) -> None:
    from grun_cli.config import config_dir

    conf = config_dir() / "experiment"
    for table in tables:
        for cell in table.cells.get(scale, []):
            if not (conf / f"{cell.experiment}.yaml").is_file():
                raise GrunError(f"{table.folder}/table.yaml: {cell.name} names experiment={cell.experiment}, "
                                f"but {conf}/{cell.experiment}.yaml does not exist; add the selected config there")


def plan_paper(tables: Sequence[Any]) -> str:
    lines = ["grun repro scale=paper will run, on this machine:"]
    hours = 0.0
    for table in tables:
        for cell in table.cells.get("paper", []):
            h = float(cell.labels.get("hours", "nan"))
            hours += 0 if h != h else h
            model = f"model={cell.labels['model']} " if "model" in cell.labels else ""
            lines.append(f"  {table.name}: grun unlearn {model}experiment={cell.experiment} {' '.join(cell.overrides)}"
                         + (f"  (~{h:g} GPU h)" if h == h else ""))
    lines.append(f"  estimated {hours:.1f} GPU hours in all on one 141 GB H200-class GPU (FLOP estimates: README "
                 "'Paper scale'); the targets and retain models are fine-tuned once and cached")
    return "\n".join(lines)


def repro(cfg: DictConfig) -> dict[str, Any]:
    from grun_cli.repro.claims import HOLDS, check, load_claims
    from grun_cli.repro.expected import DRIFTED, FAILED, OK, compare, measure
    from grun_cli.repro.manifest import (
        CLAIMS_FILE,
        CPU_SCALES,
        SCALES,
        data_root,
        find_tables,
        read_expected,
    )
    from grun_cli.repro.runner import (
        describe_machine,
        efficiency_shapes,
        rows_for_expected,
        run_efficiency,
        run_table,
        step_shapes,
        warm_targets,
    )

    scale = str(cfg.scale)
    if scale not in SCALES:
        raise GrunError(f"scale={scale}: choose one of {', '.join(SCALES)}")
    seeds = _seeds(cfg.seeds)
    update, do_check = bool(cfg["update"]), bool(cfg["check"])
    if update and scale not in CPU_SCALES:
        raise GrunError("update=true writes expected_ci*.json, the CPU-scale numbers: use it with scale=ci or cpu")
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
    _check_experiments(tables, scale)
    if update and any(t.kind != "efficiency" for t in tables) and len(seeds) < MIN_SEEDS_FOR_UPDATE:
        raise GrunError(f"update=true writes tolerances from the spread over seeds: give {MIN_SEEDS_FOR_UPDATE} or "
                        f"more, e.g. seeds=[42,1,2] (got {seeds})")
    if update and any(t.kind == "efficiency" for t in tables) and int(cfg.repeats) < MIN_SEEDS_FOR_UPDATE:
        raise GrunError(f"update=true measures the efficiency table's spread over repeats: give repeats="
                        f"{MIN_SEEDS_FOR_UPDATE} or more (got {cfg.repeats})")
    extra = [str(o) for o in as_list(cfg.overrides)]

    # what each table runs on, its expected numbers and its claims: all read before any run
    plan, missing = [], {}  # missing: the tables this machine has no data to check (table -> data set)
    for table in tables:
        data = table.data_for(data_root()) if table.kind != "efficiency" else None
        if table.kind != "efficiency" and data is None:
            missing[table.name] = str(table.data)
            continue
        expected = read_expected(table, data) if scale in CPU_SCALES else None
        if scale in CPU_SCALES and do_check and not update and expected is None:
            measure = f"grun repro tables=[{table.name}] seeds=[42,1,2] update=true"
            if data != table.data:  # only the fallback data set here, with nothing to check it against
                missing[table.name] = str(table.data)
                continue
            raise GrunError(f"{table.expected_path(data)} does not exist; measure it first: {measure}")
        plan.append((table, data, expected, load_claims(table.folder / CLAIMS_FILE)))
    if missing:  # a reproduction must not pass by checking nothing
        what = ", ".join(f"{name} needs {data}" for name, data in missing.items())
        if not cfg.get("allow_partial", False):
            raise GrunError(f"{what}: no copy under $GRUN_DATA_DIR ({data_root() or 'not set'}) and the Hugging Face "
                            "Hub unreachable; set GRUN_DATA_DIR to the data copies, or add allow_partial=true to check "
                            "only the tables that can run")
        print(f"allow_partial=true: not checking {what} (no copy under $GRUN_DATA_DIR, Hub unreachable)")
    if not plan:
        raise GrunError("no table can run here; see the lines above")
    if scale == "paper":
        import torch

        print(plan_paper([p[0] for p in plan]))
        if not torch.cuda.is_available():
            raise GrunError("scale=paper trains 7-8B models: run it on a GPU machine (make repro-paper there)")
        if cfg.get("confirm", True):
            if not sys.stdin.isatty():
                raise GrunError("scale=paper needs a confirmation: add confirm=false to start without one")
            if input("start? [y/N] ").strip().lower() not in ("y", "yes"):
                raise GrunError("not started")

    out = run_dir()
    started = time.time()
    verdicts: list[dict[str, Any]] = []
    tables_done: dict[str, Any] = {}
    warming = None
    for index, (table, data, expected, claims) in enumerate(plan):
        print(f"{table.name}: {table.title}" + (f" (data={data})" if data else ""))
        later = plan[index + 1:]
        if warming is None and table.kind != "efficiency" and jobs >= 2 and scale in CPU_SCALES \
                and not any(t.kind == "efficiency" for t, _, _, _ in later):
            # (never while the efficiency table runs: its step times want a quiet machine)
            warming = warm_targets([(t, d) for t, d, _, _ in later], scale, seeds[0], extra, threads) or False
        left_out = table.not_run(scale)  # scale=ci: the cells only scale=cpu runs
        partial = bool(only or left_out)  # part of the table runs: numbers and claims of what ran
        if table.kind == "efficiency":
            result = run_efficiency(table, root.resolve().parent, out, int(cfg.repeats), scale=scale)
            skipped = set(step_shapes(table.settings.get("step_shapes", []))) - set(efficiency_shapes(table, scale))
            left_out |= {k for k in (expected or {}).get("numbers", {}) if k.split("/")[0] in skipped}
            partial = partial or bool(skipped)
        else:
            result = run_table(table, scale, seeds, out, data, extra, jobs=jobs, threads=threads)
        for failure in result.failures:
            verdicts.append({"status": FAILED, "table": table.name, "what": "run", "text": failure})
        if update:
            per_seed = rows_for_expected(result)
            numbers = measure(per_seed, table.metrics)
            path = table.expected_path(data)
            command = "grun repro " + " ".join(sys.argv[1:])
            if partial and expected is not None:  # these cells join (or replace theirs in) the recorded numbers
                numbers = {**expected["numbers"], **numbers}
                command = "; ".join([*as_list(expected.get("command")), command])
            atomic_write_json(path, {
                "about": f"{table.title}: CPU-scale numbers (mean over seeds; log10 metrics: geometric mean) and "
                         "tolerances (1.5 x the largest distance of a seed from the mean, at least the table's "
                         "min_tol) measured by `grun repro`",
                "command": command,
                "data": data, "seeds": seeds if table.kind != "efficiency" else None,
                "repeats": int(cfg.repeats) if table.kind == "efficiency" else None,
                "machine": describe_machine(), "date": time.strftime("%Y-%m-%d"), "numbers": numbers})
            print(f"  wrote {path}")
            expected = {"numbers": numbers}
        observed = result.averaged()
        if do_check and expected is not None:
            recorded = {k: v for k, v in expected["numbers"].items()
                        if (not only or k in observed) and k not in left_out}
            for v in compare(observed, recorded, table.metrics):
                verdicts.append({"status": v.status, "table": table.name, "what": f"{v.row} {v.metric}",
                                 "text": v.text})
        skipped = []
        for model, rows in result.claim_rows().items():
            for claim in claims:
                if scale == "paper":  # the paper's claims are expected to hold at its scale
                    claim = type(claim)(**{**vars(claim), "cpu_scale": HOLDS})
                res = check(claim, rows, partial=partial)
                if partial and res.outcome is None:
                    skipped.append(claim.id)
                    continue
                record = claim.cpu_scale if isinstance(claim.cpu_scale, str) else \
                    ", ".join(f"{k}: {v}" for k, v in claim.cpu_scale.items())
                recorded = "" if scale == "paper" else f" [recorded at CPU scale: {record}]"
                verdicts.append({"status": res.status, "table": table.name,
                                 "what": f"claim {claim.id}" + (f" @{model}" if model else ""),
                                 "text": res.line() + recorded, "holds": res.holds, "outcome": res.outcome,
                                 "claim": claim.claim})
        if skipped:
            print(f"  {table.name}: claims not checked (their rows were not run with cells=): {', '.join(skipped)}")
        tables_done[table.name] = {"data": data, "seconds": round(result.seconds, 1),
                                   "report": str(result.report) if result.report else None,
                                   "rows": observed}
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
