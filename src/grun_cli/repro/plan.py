"""What `grun repro` will run, read and checked before the first cell starts: the seeds, the
experiment configs each cell names, and for each table its data set, its expected numbers and
its claims. A table this machine has no data for is listed, never silently passed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from grun_cli.config import config_dir
from grun_cli.errors import GrunError
from grun_cli.repro.claims import Claim, load_claims
from grun_cli.repro.manifest import CLAIMS_FILE, CPU_SCALES, Table, data_root, read_expected
from grun_cli.runtime import as_list

MIN_SEEDS_FOR_UPDATE = 3


@dataclass
class Planned:
    """One table to run: the data set it runs on, its recorded numbers (None: nothing recorded
    or not a CPU scale) and its claims."""

    table: Table
    data: str | None
    expected: dict[str, Any] | None
    claims: list[Claim]


def parse_seeds(value: Any) -> list[int]:
    seeds = as_list(value)
    try:
        out = [int(s) for s in seeds]
    except (TypeError, ValueError):
        raise GrunError(f"seeds={seeds}: give whole numbers, e.g. seeds=[42] or seeds=[42,1,2]") from None
    if not out or len(set(out)) != len(out):
        raise GrunError(f"seeds={seeds}: give one or more distinct seeds, e.g. seeds=[42,1,2]")
    return out


def check_experiments(tables: Sequence[Table], scale: str) -> None:
    """Every cell's experiment config exists (a typo would otherwise fail that cell only,
    minutes into the run)."""
    conf = config_dir() / "experiment"
    for table in tables:
        for cell in table.cells.get(scale, []):
            if not (conf / f"{cell.experiment}.yaml").is_file():
                raise GrunError(f"{table.folder}/table.yaml: {cell.name} names experiment={cell.experiment}, "
                                f"but {conf}/{cell.experiment}.yaml does not exist; add the selected config there")


def check_update(tables: Sequence[Table], scale: str, seeds: list[int], repeats: int) -> None:
    """update=true writes tolerances from a spread: it needs several seeds (repeats for the
    efficiency table) and a CPU scale."""
    if scale not in CPU_SCALES:
        raise GrunError("update=true writes expected_ci*.json, the CPU-scale numbers: use it with scale=ci or cpu")
    if any(t.kind != "efficiency" for t in tables) and len(seeds) < MIN_SEEDS_FOR_UPDATE:
        raise GrunError(f"update=true writes tolerances from the spread over seeds: give {MIN_SEEDS_FOR_UPDATE} or "
                        f"more, e.g. seeds=[42,1,2] (got {seeds})")
    if any(t.kind == "efficiency" for t in tables) and repeats < MIN_SEEDS_FOR_UPDATE:
        raise GrunError(f"update=true measures the efficiency table's spread over repeats: give repeats="
                        f"{MIN_SEEDS_FOR_UPDATE} or more (got {repeats})")


def plan_tables(tables: Sequence[Table], scale: str, do_check: bool, update: bool,
                allow_partial: bool) -> tuple[list[Planned], dict[str, str]]:
    """Each table's data, expected numbers and claims; and the tables left out for want of
    data (name -> data set), an error unless ``allow_partial`` (a reproduction must not pass
    by checking nothing)."""
    plan, missing = [], {}
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
        plan.append(Planned(table, data, expected, load_claims(table.folder / CLAIMS_FILE)))
    if missing:
        what = ", ".join(f"{name} needs {data}" for name, data in missing.items())
        if not allow_partial:
            raise GrunError(f"{what}: no copy under $GRUN_DATA_DIR ({data_root() or 'not set'}) and the Hugging Face "
                            "Hub unreachable; set GRUN_DATA_DIR to the data copies, or add allow_partial=true to check "
                            "only the tables that can run")
        print(f"allow_partial=true: not checking {what} (no copy under $GRUN_DATA_DIR, Hub unreachable)")
    if not plan:
        raise GrunError("no table can run here; see the lines above")
    return plan, missing


def plan_paper(tables: Sequence[Table]) -> str:
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
