"""grun repro: expected numbers, claims and table files (golden, pure), and the real command on
a one-cell table of the tiny model (expected values measured over seeds, a rerun that passes,
a broken recipe that fails, bad files refused before anything runs)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from grun_cli.errors import GrunError
from grun_cli.repro.claims import Claim, check, load_claims
from grun_cli.repro.expected import DRIFTED, FAILED, OK, compare, measure
from grun_cli.repro.manifest import MetricSpec, find_tables, load_table

from conftest import GOOD_TARGET, SMALL_DATA, grun

FQ = MetricSpec("forget_quality", log10=True, better="higher", min_tol=0.5)
MU = MetricSpec("model_utility", better="higher", min_tol=0.01)
PROB = MetricSpec("forget_Q_A_Prob", better="lower", min_tol=0.0)


# -- expected numbers --------------------------------------------------------------------------
def test_measure_takes_mean_and_spread_with_floor() -> None:
    seeds = [{"a": {"forget_quality": 1e-10, "model_utility": 0.80}},
             {"a": {"forget_quality": 1e-12, "model_utility": 0.86}},
             {"a": {"forget_quality": 1e-14, "model_utility": 0.83}}]
    got = measure(seeds, {"forget_quality": FQ, "model_utility": MU})["a"]
    assert got["forget_quality"]["value"] == pytest.approx(1e-12)  # geometric mean
    assert got["forget_quality"]["tol"] == pytest.approx(3.0)  # 1.5 x 2 decades
    assert got["model_utility"]["value"] == pytest.approx(0.83)
    assert got["model_utility"]["tol"] == pytest.approx(0.045)
    same = measure([{"a": {"model_utility": 0.9}}] * 3, {"model_utility": MU})["a"]["model_utility"]
    assert same["tol"] == 0.01  # seeds that agree: the floor


def test_compare_ok_drifted_failed_and_missing() -> None:
    expected = {"a": {"forget_quality": {"value": 1e-12, "tol": 1.0, "log10": True, "better": "higher"},
                      "model_utility": {"value": 0.8, "tol": 0.02, "better": "higher"},
                      "forget_Q_A_Prob": {"value": 0.2, "tol": 0.05, "better": "lower"}}}
    specs = {"forget_quality": FQ, "model_utility": MU, "forget_Q_A_Prob": PROB}

    def statuses(observed):
        return {v.metric: v.status for v in compare({"a": observed}, expected, specs)}

    assert statuses({"forget_quality": 5e-12, "model_utility": 0.81, "forget_Q_A_Prob": 0.22}) == \
        {"forget_quality": OK, "model_utility": OK, "forget_Q_A_Prob": OK}
    assert statuses({"forget_quality": 1e-9, "model_utility": 0.9, "forget_Q_A_Prob": 0.05}) == \
        {"forget_quality": DRIFTED, "model_utility": DRIFTED, "forget_Q_A_Prob": DRIFTED}
    assert statuses({"forget_quality": 0.0, "model_utility": 0.7, "forget_Q_A_Prob": 0.5}) == \
        {"forget_quality": FAILED, "model_utility": FAILED, "forget_Q_A_Prob": FAILED}
    assert statuses({"model_utility": math.nan}) == \
        {"forget_quality": FAILED, "model_utility": FAILED, "forget_Q_A_Prob": FAILED}


def test_a_slow_wall_clock_ratio_is_reported_not_failed() -> None:
    """CI failed once on a mid-shape LoRA step ratio of 0.91 against 0.73 +- 0.15 on a busy
    machine: timing ratios outside their spread are reported; other numbers still fail."""
    expected = {"mid/lora": {"step_time_vs_full": {"value": 0.7269, "tol": 0.15, "better": "lower"},
                             "peak_memory_vs_full": {"value": 0.5, "tol": 0.05, "better": "lower"}}}
    specs = {"step_time_vs_full": MetricSpec("step_time_vs_full", better="lower", min_tol=0.15, wall_clock=True),
             "peak_memory_vs_full": MetricSpec("peak_memory_vs_full", better="lower", min_tol=0.05)}
    verdicts = {v.metric: v for v in compare(
        {"mid/lora": {"step_time_vs_full": 0.9078, "peak_memory_vs_full": 0.7}}, expected, specs)}
    assert verdicts["step_time_vs_full"].status == DRIFTED
    assert "reported, not failed" in verdicts["step_time_vs_full"].text
    assert verdicts["peak_memory_vs_full"].status == FAILED
    missing = compare({"mid/lora": {}}, expected, specs)
    assert {v.status for v in missing} == {FAILED}


# -- claims ------------------------------------------------------------------------------------
ROWS = [({"method": "npo", "adapter": "grun"}, {"model_utility": 0.85, "step": 1.0}),
        ({"method": "npo", "adapter": "full"}, {"model_utility": 0.90, "step": 4.0}),
        ({"method": "gd", "adapter": "grun"}, {"model_utility": 0.83, "step": 1.0}),
        ({"method": "gd", "adapter": "full"}, {"model_utility": 0.50, "step": 4.0}),
        ({"role": "target"}, {"model_utility": 0.93})]


def _claim(**kw) -> Claim:
    base = dict(id="c", claim="text", metric="model_utility", op=">=", left={"adapter": "grun"},
                right={"adapter": "full"}, for_each={"method": ["gd", "npo"]})
    return Claim(**{**base, **kw})


def test_claim_per_method_and_recorded_outcome() -> None:
    held = check(_claim(cpu_scale="holds"), ROWS)
    assert held.holds is False and held.status == FAILED  # npo: 0.85 < 0.90
    assert "npo/grun 0.85 >= npo/full 0.9: fails" in held.line() and held.line().startswith("does not hold")
    assert check(_claim(cpu_scale="fails"), ROWS).status == OK
    assert check(_claim(for_each={"method": ["gd"]}, cpu_scale="fails"), ROWS).status == DRIFTED
    scaled = check(_claim(metric="step", op="<=", scale=0.3, for_each={"method": ["gd", "npo"]}), ROWS)
    assert scaled.holds is True  # 1.0 <= 0.3 x 4.0
    bar = check(_claim(right=None, value=0.8, for_each={"method": ["gd", "npo"]}), ROWS)
    assert bar.holds is True and "the bar" in bar.line()
    vs_target = check(_claim(right={"role": "target"}, scale=0.9, for_each={"method": ["npo"]}), ROWS)
    assert vs_target.holds is True  # 0.85 >= 0.9 x 0.93
    missing = check(_claim(for_each={"method": ["idk"]}), ROWS)
    assert missing.holds is None and missing.status == FAILED and "no model_utility" in missing.line()


def test_claim_records_per_method_and_partial_runs() -> None:
    """cpu_scale per for_each value: each value against its own record; a partial run (cells=,
    scale=ci) checks the values whose rows ran and leaves the others out."""
    per = _claim(cpu_scale={"gd": "holds", "npo": "fails"})
    assert check(per, ROWS).status == OK  # gd 0.83 >= 0.50 holds, npo 0.85 < 0.90 fails: as recorded
    assert check(_claim(cpu_scale={"gd": "fails", "npo": "fails"}), ROWS).status == DRIFTED
    assert check(_claim(cpu_scale={"gd": "holds", "npo": "holds"}), ROWS).status == FAILED
    npo_only = [r for r in ROWS if r[0].get("method") != "gd"]
    partial = check(per, npo_only, partial=True)
    assert partial.status == OK and partial.holds is False and "gd/" not in partial.line()
    assert check(per, npo_only).status == FAILED  # a whole run with a row missing: cannot be checked
    none_ran = check(_claim(for_each={"method": ["idk"]}), ROWS, partial=True)
    assert none_ran.holds is None  # grun repro lists it as not checked


def test_claim_outcome_over_seeds_is_one_rule() -> None:
    """Three outcomes from the seed ranges, the same rule whichever side GRUN is on: holds when
    the ranges lie the claimed way round, fails when the other way, not shown when they overlap
    (hand-made values)."""
    rows = [({"method": "npo", "adapter": "grun"}, {"u": [0.80, 0.86, 0.84], "auc": [0.96, 0.94]}),
            ({"method": "npo", "adapter": "full"}, {"u": [0.83, 0.85]}),
            ({"method": "gd", "adapter": "grun"}, {"u": [0.90, 0.91]}),
            ({"method": "gd", "adapter": "full"}, {"u": [0.85, 0.89]}),
            ({"method": "idk", "adapter": "grun"}, {"u": [0.70, 0.72]}),
            ({"method": "idk", "adapter": "full"}, {"u": [0.80, 0.79]}),
            ({"role": "target"}, {"u": 0.95})]
    claim = _claim(metric="u", for_each={"method": ["gd", "npo", "idk"]})

    def one(method: str, **kw) -> str | None:
        return check(_claim(metric="u", for_each={"method": [method]}, **kw), rows).outcome
    assert (one("npo"), one("gd"), one("idk")) == ("not shown", "holds", "fails")
    assert one("gd", op="<=") == "fails" and one("idk", op="<=") == "holds"  # the other way round
    assert one("npo", op="<=") == "not shown"
    # against a reference row and a bar (one value): the left seeds straddle it or not
    assert one("npo", right={"role": "target"}, scale=0.9) == "not shown"  # 0.80 < 0.855 < 0.86
    assert one("gd", right={"role": "target"}, scale=0.9) == "holds"
    auc = check(_claim(metric="auc", right=None, value=0.95, for_each={"method": ["npo"]}), rows)
    assert auc.outcome == "not shown" and "[0.94, 0.96]" in auc.line() and "over 2 seeds" in auc.line()
    assert "[0.8, 0.86] >= npo/full [0.83, 0.85] over 3 / 2 seeds" in check(
        _claim(metric="u", for_each={"method": ["npo"]}), rows).line()  # the ranges the rule compares
    # for each method: holds when each holds, fails when any fails, else not shown
    assert check(claim, rows).outcome == "fails"
    assert check(_claim(metric="u", for_each={"method": ["gd", "npo"]}), rows).outcome == "not shown"
    # records: not shown matches not shown; a holds record that is no longer shown is a regression
    assert check(_claim(metric="u", for_each={"method": ["npo"]}, cpu_scale="not shown"), rows).status == OK
    assert check(_claim(metric="u", for_each={"method": ["npo"]}, cpu_scale="holds"), rows).status == FAILED
    assert check(_claim(metric="u", for_each={"method": ["npo"]}, cpu_scale="fails"), rows).status == DRIFTED
    assert check(_claim(metric="u", for_each={"method": ["gd"]}, cpu_scale="not shown"), rows).status == DRIFTED
    # one seed (make repro-ci): a point is inside any recorded spread, so not shown is never contradicted
    points = [(labels, {"u": m["u"][0] if isinstance(m["u"], list) else m["u"]}) for labels, m in rows]
    assert check(_claim(metric="u", for_each={"method": ["npo"]}, cpu_scale="not shown"), points).status == OK
    assert check(_claim(metric="u", for_each={"method": ["npo"]}, cpu_scale="holds"), points).status == FAILED


def test_claims_file_with_per_method_records(tmp_path: Path) -> None:
    path = tmp_path / "claims.yaml"
    path.write_text("claims: [{id: a, claim: t, metric: m, op: '>=', left: {adapter: grun}, value: 1, "
                    "for_each: {method: [gd, npo]}, cpu_scale: {gd: holds, npo: fails}}]")
    assert load_claims(path)[0].cpu_scale == {"gd": "holds", "npo": "fails"}
    path.write_text("claims: [{id: a, claim: t, metric: m, op: '>=', left: {adapter: grun}, value: 1, "
                    "for_each: {method: [gd, npo]}, cpu_scale: {gd: holds}}]")
    with pytest.raises(GrunError, match="holds, fails or not shown for each of gd, npo"):
        load_claims(path)


@pytest.mark.parametrize("body, message", [
    ("claims: [{id: a, claim: t, metric: m, op: '=>', left: {adapter: grun}, value: 1}]", "op '=>'"),
    ("claims: [{id: a, claim: t, metric: m, op: '>=', left: {adapter: grun}}]", "right: {...}"),
    ("claims: [{id: a, claim: t, metric: m, op: '>=', left: {adapter: grun}, value: 1, cpu_scale: maybe}]",
     "cpu_scale"),
    ("claims: [{id: a, claim: t, metric: m, op: '>=', left: {adapter: grun}, value: 1, for_each: {method: gd}}]",
     "for_each"),
    ("claims: {a: 1}", "list under claims"),
    ("claims: [{id: a, metric: m}]", "has no claim, op, left"),
])
def test_bad_claims_files_are_refused(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "claims.yaml"
    path.write_text(body)
    with pytest.raises(GrunError, match=message.replace("(", r"\(").replace("{", r"\{").replace(".", r"\.")):
        load_claims(path)


# -- table files -------------------------------------------------------------------------------
def _table(root: Path, name: str, body: str) -> Path:
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "table.yaml").write_text(body)
    return root / name


GOOD_TABLE = """
title: t
kind: tofu
data: {name: tofu, fallback: synthetic}
cells:
  ci:
    - {method: npo, adapter: grun, experiment: tiny_tofu/npo_grun}
metrics:
  forget_quality: {log10: true, better: higher, min_tol: 0.5}
"""


def test_table_reads_cells_metrics_and_data_fallback(tmp_path: Path) -> None:
    table = load_table(_table(tmp_path, "t", GOOD_TABLE))
    assert [c.name for c in table.cells["ci"]] == ["npo/grun"]
    assert table.metrics["forget_quality"].log10 and table.references
    assert table.data_for(None) == "synthetic"
    assert table.expected_path("synthetic").name == "expected_ci.synthetic.json"
    (tmp_path / "data" / "tofu").mkdir(parents=True)
    assert table.data_for(str(tmp_path / "data")) == "tofu"
    assert table.expected_path("tofu").name == "expected_ci.json"


def test_a_table_too_long_for_ci_lists_cpu_cells_only(tmp_path: Path) -> None:
    table = load_table(_table(tmp_path, "t", GOOD_TABLE.replace("cells:\n  ci:", "cells:\n  cpu:")))
    assert "ci" not in table.cells and [c.name for c in table.cells["cpu"]] == ["npo/grun"]
    assert table.not_run("ci") == {"npo/grun"}


@pytest.mark.parametrize("body, message", [
    ("kind: muse\ncells: {ci: []}", "kind is 'muse'"),
    ("kind: tofu\nmetrics: {a: {}}", "no cells.ci or cells.cpu"),
    ("kind: tofu\ncells: {ci: [{method: npo, adapter: grun, experiment: x}, {method: npo, adapter: grun, "
     "experiment: y}]}\nmetrics: {a: {}}", "twice"),
    ("kind: tofu\ncells: {ci: [{method: npo, adapter: grun, experiment: x}]}\nmetrics: {a: {better: up}}",
     "better is 'up'"),
    ("kind: tofu\ncells: {ci: [{method: npo, experiment: x}]}\nmetrics: {a: {}}", "has no adapter"),
    ("kind: [tofu", "not valid YAML"),
])
def test_bad_table_files_are_refused(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(GrunError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_table(_table(tmp_path, "t", body))


def test_unknown_table_names_the_available_ones(tmp_path: Path) -> None:
    _table(tmp_path, "tofu_x", GOOD_TABLE)
    with pytest.raises(GrunError, match="no table wmdp_x .* choose from tofu_x"):
        find_tables(tmp_path, ["wmdp_x"])


def test_the_repository_tables_load_and_name_existing_configs() -> None:
    from grun_cli.config import config_dir

    root = Path(__file__).resolve().parents[1] / "experiments"
    tables = find_tables(root, None)
    assert tables, "experiments/ has no table.yaml"
    for table in tables:
        load_claims(table.folder / "claims.yaml")
        for cells in table.cells.values():
            for cell in cells:
                assert (config_dir() / "experiment" / f"{cell.experiment}.yaml").is_file(), cell


def test_efficiency_shapes_and_rounds() -> None:
    import importlib.util

    from grun_cli.repro.runner import step_shapes

    assert step_shapes(["tiny", "mid"]) == {"tiny": [], "mid": []}
    from grun_cli.repro.manifest import find_tables
    from grun_cli.repro.runner import efficiency_shapes

    (table,) = find_tables(Path(__file__).resolve().parents[1] / "experiments", ["efficiency"])
    assert list(efficiency_shapes(table, "ci")) == ["tiny"]  # CI's budget
    assert list(efficiency_shapes(table, "cpu")) == ["tiny", "mid"]
    assert step_shapes({"tiny": ["--steps", 30], "mid": None}) == {"tiny": ["--steps", "30"], "mid": []}
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "step_cost.py"
    spec = importlib.util.spec_from_file_location("step_cost", path)
    step_cost = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(step_cost)
    runs = [{"adapter": "grun", "step_ms": ms, "peak_mb": mb, "trainable": 5, "trainable_pct": 0.1}
            for ms, mb in [(100.0, 9.0), (300.0, 10.0), (120.0, 11.0)]]
    row = step_cost.median_row(runs)  # a slow stretch of the machine in one round is outvoted
    assert (row["step_ms"], row["peak_mb"], row["rounds"]) == (120.0, 10.0, 3)
    assert step_cost.median_row([*runs, {"adapter": "grun", "error": "out of memory"}])["error"] == "out of memory"


# -- the real command --------------------------------------------------------------------------
CELL = ["logger=none", *SMALL_DATA[:2], "probe.max_rows=20", "eval.max_rows=12", GOOD_TARGET,
        "train.max_steps=40", "train.lr=1e-2"]
MINI_TABLE = {
    "title": "one cell", "kind": "tofu", "data": {"name": "synthetic"},
    "cells": {"ci": [{"method": "npo", "adapter": "grun", "experiment": "tiny_tofu/npo_grun",
                      "overrides": CELL}]},
    "metrics": {"forget_Q_A_Prob": {"better": "lower", "min_tol": 0.02},
                "forget_Q_A_ROUGE": {"better": "lower", "min_tol": 0.02}},
}
MINI_CLAIMS = """
claims:
  - {id: forgets, claim: GRUN lowers the forget answer probability below 0.9 x the target's,
     metric: forget_Q_A_Prob, left: {adapter: grun}, op: '<=', right: {role: target}, scale: 0.9,
     cpu_scale: holds}
  - {id: perfect_gate, claim: a perfect gate, metric: gate_auc, left: {adapter: grun}, op: '>',
     value: 1.0, cpu_scale: fails}
"""


def test_repro_measures_expected_then_passes_and_catches_a_broken_recipe(
        clean_env: dict[str, str], tmp_path: Path) -> None:
    import yaml

    root = tmp_path / "experiments"
    folder = _table(root, "mini", yaml.safe_dump(MINI_TABLE))
    (folder / "claims.yaml").write_text(MINI_CLAIMS)
    out = tmp_path / "out"

    missing = grun("repro", f"root={root}", f"out={out}", env=clean_env)
    assert missing.returncode == 2 and "expected_ci.json does not exist" in missing.stderr
    assert "update=true" in missing.stderr and not (out / "mini" / "seed42").exists()

    measured = grun("repro", f"root={root}", f"out={out}", "seeds=[1,2,3]", "update=true", env=clean_env)
    assert measured.returncode == 0, measured.stdout[-3000:] + measured.stderr[-3000:]
    expected = json.loads((folder / "expected_ci.json").read_text())
    assert set(expected["numbers"]) == {"npo/grun", "target", "retain"}
    prob = expected["numbers"]["npo/grun"]["forget_Q_A_Prob"]
    assert len(prob["seeds"]) == 3 and prob["tol"] >= 0.02
    assert (out / "mini" / "report" / "report.md").is_file()

    started = time.time()
    again = grun("repro", f"root={root}", f"out={out}", "seeds=[1]", env=clean_env)
    assert again.returncode == 0, again.stdout[-3000:]
    assert time.time() - started < 120  # the complete cell is reused, not rerun
    lines = [ln for ln in again.stdout.splitlines() if ln.startswith(("ok", "drifted", "failed"))]
    assert any("claim forgets: holds" in ln for ln in lines) and not any(ln.startswith("failed") for ln in lines)
    assert "claim perfect_gate: does not hold" in again.stdout

    # one cell re-measured joins the recorded numbers (the runs are reused from out=); the claims
    # its rows can decide are checked, one that needs a row not run is named as not checked
    (folder / "claims.yaml").write_text(MINI_CLAIMS + """  - {id: vs_full, claim: GRUN below full, metric: forget_Q_A_Prob,
     left: {adapter: grun}, op: '<=', right: {adapter: full}, cpu_scale: holds}
""")
    merged = grun("repro", f"root={root}", f"out={out}", "seeds=[1,2,3]", "update=true", "cells=[npo/grun]",
                  env=clean_env)
    (folder / "claims.yaml").write_text(MINI_CLAIMS)
    assert merged.returncode == 0, merged.stdout[-3000:] + merged.stderr[-3000:]
    assert "claims not checked (their rows were not run with cells=): vs_full" in merged.stdout
    assert "claim forgets: holds" in merged.stdout
    after = json.loads((folder / "expected_ci.json").read_text())
    assert set(after["numbers"]) == {"npo/grun", "target", "retain"} and after["numbers"] == expected["numbers"]
    assert after["command"].count("grun repro") == 2

    broken = grun("repro", f"root={root}", f"out={tmp_path / 'broken'}", "seeds=[1]",
                  'overrides=["train.max_steps=1"]', env=clean_env)
    assert broken.returncode == 1, broken.stdout[-3000:] + broken.stderr[-2000:]
    failed = [ln for ln in broken.stdout.splitlines() if ln.startswith("failed")]
    assert any("npo/grun forget_Q_A_Prob" in ln for ln in failed)
    assert any("claim forgets: does not hold" in ln for ln in failed)
    summary = json.loads((tmp_path / "broken" / "repro.json").read_text())
    assert summary["counts"]["failed"] >= 2


@pytest.mark.parametrize("args, message", [
    (["tables=[nope]"], "no table nope"),
    (["seeds=[1]", "update=true"], "give 3 or more"),
    (["scale=huge"], "scale=huge"),
    (["seeds=[a]"], "whole numbers"),
    (["tables=[tofu_forget05]", "cells=[gd/nope]"], "cells=['gd/nope']: not a cell of tofu_forget05 at scale=ci"),
])
def test_bad_repro_settings_fail_in_one_line(clean_env: dict[str, str], tmp_path: Path, args: list[str],
                                             message: str) -> None:
    started = time.time()
    r = grun("repro", f"out={tmp_path / 'o'}", *args, env=clean_env)
    assert r.returncode == 2, r.stderr[-2000:]
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert time.time() - started < 120


def test_a_table_without_ci_cells_is_left_to_scale_cpu(clean_env: dict[str, str], tmp_path: Path) -> None:
    _table(tmp_path, "long", GOOD_TABLE.replace("cells:\n  ci:", "cells:\n  cpu:"))
    r = grun("repro", f"root={tmp_path}", f"out={tmp_path / 'o'}", env=clean_env)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "long: no cells.ci" in r.stdout
    assert r.stderr.strip() == "grun repro: error: tables=['long']: no cells.ci (too long for CI); run with scale=cpu"


def test_a_later_tables_target_is_built_in_the_background(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """grun repro builds the next tables' cached tiny targets in a background process while a
    table runs; the table that needs one then finds it (and would wait on the lock if not done)."""
    import yaml
    from hydra import compose, initialize_config_dir

    from grun_cli.config import config_dir
    from grun_cli.models.target import ensure_finetuned, finetune_config, recipe_hash
    from grun_cli.repro.runner import cell_overrides, warm_targets

    monkeypatch.setenv("GRUN_CACHE_DIR", str(tmp_path / "cache"))
    cell = ["logger=none", *SMALL_DATA[:2], 'target.overrides=["train.max_steps=3","extra_splits=[]","check.max_rows=0"]']
    table = load_table(_table(tmp_path, "later", yaml.safe_dump(
        {**MINI_TABLE, "cells": {"ci": [{"method": "npo", "adapter": "grun", "experiment": "tiny_tofu/npo_grun",
                                         "overrides": cell}]}})))
    proc = warm_targets([(table, "synthetic")], "ci", 42, [], threads=1)
    proc.join(timeout=300)
    assert proc.exitcode == 0
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        cfg = compose(config_name="unlearn", overrides=cell_overrides(table.cells["ci"][0], 42, "synthetic", table, []))
        folder = tmp_path / "cache" / "finetuned" / recipe_hash(finetune_config(cfg, "full"))
        assert (folder / "run_card.json").is_file()  # built by the background process
        built = (folder / "run_card.json").stat().st_mtime_ns
        assert ensure_finetuned(cfg, "full") == folder and (folder / "run_card.json").stat().st_mtime_ns == built
    assert warm_targets([], "ci", 42, [], threads=1) is None


def test_repro_without_data_ends_non_zero_unless_partial_is_asked(clean_env: dict[str, str], tmp_path: Path) -> None:
    """A fresh clone with no data copies and no Hub: `make repro-ci` must not pass by checking
    nothing. One line names what is missing; allow_partial=true says last what was not checked."""
    env = {**clean_env, "HF_HUB_OFFLINE": "1"}
    r = grun("repro", "tables=[tofu_forget05,wmdp]", f"out={tmp_path / 'o'}", env=env)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "tofu_forget05 needs tofu, wmdp needs wmdp: no copy under $GRUN_DATA_DIR (not set)" in r.stderr
    assert "allow_partial=true" in r.stderr
    r = grun("repro", "tables=[tofu_forget05,wmdp]", "allow_partial=true", f"out={tmp_path / 'o'}", env=env)
    assert r.returncode == 2 and "no table can run here" in r.stderr  # nothing left to check
    assert "allow_partial=true: not checking tofu_forget05 needs tofu, wmdp needs wmdp" in r.stdout
