"""`grun report`: table formats (golden strings on hand-made metrics), input checks, and the real
CLI on real tiny run folders: `grun unlearn` runs (GRUN and LoRA), `grun eval` reference runs,
and a sweep directory laid out by hand from them as `grun sweep` writes it."""

from __future__ import annotations

import csv
import io
import json
import shutil
import statistics
from pathlib import Path

import pytest

from grun_cli.errors import GrunError
from grun_cli.report.collect import (
    NO_TRIAL_MET_BAR,
    Point,
    Report,
    Row,
    SweepInfo,
    expand,
    read_run,
)
from grun_cli.report.tables import (
    COLUMNS,
    csv_text,
    fmt_params,
    fmt_sci,
    fmt_time,
    latex,
    markdown,
    markdown_table,
)

from conftest import SMALL_DATA, cli_env, grun

QUICK_TARGET = 'target.overrides=["train.max_steps=5","extra_splits=[]","check.max_rows=0"]'
SMALL = [*SMALL_DATA, QUICK_TARGET, "probe.max_rows=8", "eval.max_rows=4", "eval.max_new_tokens=8"]

TOFU_METRICS = {"forget_quality": 2.2e-17, "model_utility": 0.6234, "forget_Q_A_ROUGE": 0.41,
                "forget_Q_A_Prob": 0.0123, "forget_truth_ratio": 0.6, "gate_auc": 0.99871,
                "trainable_parameters": 101130, "trainable_percent": 7.512390653228107,
                "train_steps": 520, "wall_time_s": 41.04}
WMDP_METRICS = {"wmdp_bio_acc": 0.3125, "wmdp_cyber_acc": 0.28, "mmlu_acc": 0.5, "lm_eval_seconds": 3.0,
                "after_forget_text_nll": 5.25, "after_retain_text_nll": 1.5, "trainable_parameters": 2 * 128 * 352,
                "trainable_percent": 6.7, "train_steps": 8, "wall_time_s": 4000.0}


# -- formats: golden strings ----------------------------------------------------------------
def test_number_formats() -> None:
    assert [fmt_sci(x) for x in (2.2e-17, 0.22857142857142862, 1.0, 0.0, 9.96e-5)] == [
        "2.2e-17", "2.3e-1", "1.0e0", "0", "1.0e-4"]
    assert fmt_params(101130, 7.512390653228107) == "101,130 (7.51%)"
    assert fmt_params(8030261248, 0.0187) == "8,030,261,248 (0.0187%)"
    assert [fmt_time(s) for s in (5.64, 90.0, 7200.0)] == ["5.6 s", "1.5 min", "2.0 h"]


def test_tofu_table_golden() -> None:
    rows = [Row("target", "tofu", {"forget_quality": 1.2e-5, "model_utility": 0.62, "forget_Q_A_ROUGE": 0.98,
                                   "forget_Q_A_Prob": 0.99, "forget_truth_ratio": 0.5}, role="target"),
            Row("npo/grun", "tofu", TOFU_METRICS, method="npo", adapter="grun"),
            Row("npo/lora", "tofu", {**TOFU_METRICS, "forget_quality": None}, method="npo", adapter="lora")]
    assert markdown_table(rows, "tofu") == (
        "| run | forget quality | model utility | forget ROUGE | forget Prob | forget TR | gate AUC | params | steps "
        "| wall time |\n"
        "|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        "| target | 1.2e-5 | 0.620 | 0.980 | 0.990 | 0.500 | - | - | - | - |\n"
        "| npo/grun | 2.2e-17 | 0.623 | 0.410 | 0.012 | 0.600 | 0.999 | 101,130 (7.51%) | 520 | 41.0 s |\n"
        "| npo/lora | n/a | 0.623 | 0.410 | 0.012 | 0.600 | 0.999 | 101,130 (7.51%) | 520 | 41.0 s |")


def test_wmdp_table_reads_after_nlls_of_unlearn_runs() -> None:
    rows = [Row("rmu/full", "wmdp", WMDP_METRICS, method="rmu", adapter="full"),
            Row("target", "wmdp", {"wmdp_bio_acc": 0.6, "forget_text_nll": 1.25, "retain_text_nll": 1.5},
                role="target")]
    assert markdown_table(rows, "wmdp").splitlines()[2:] == [
        "| rmu/full | 0.312 | 0.280 | 0.500 | 5.250 | 1.500 | - | 90,112 (6.7%) | 8 | 1.1 h |",
        "| target | 0.600 | - | - | 1.250 | 1.500 | - | - | - | - |"]


def test_latex_csv_and_mixed_kinds() -> None:
    sweep = SweepInfo(Path("sw"), "highest forget_quality among complete trials", {}, 0.5,
                      {"npo/grun": {"selected": 1, "trials": 2, "pareto": [0, 1]},
                       "npo/lora": {"selected": None, "trials": 2, "pareto": []}},
                      [{"status": "complete"}, {"status": "failed"}, {"status": "complete"}, {"status": "complete"}])
    report = Report([Row("retain_model", "tofu", {"forget_quality": 1.0}, role="retain_model"),
                     Row("npo/grun", "tofu", TOFU_METRICS, Path("runs/a_b"), "npo", "grun", trial=1),
                     Row("npo/lora", "tofu", {}, method="npo", adapter="lora", note=NO_TRIAL_MET_BAR),
                     Row("rmu/grun", "wmdp", WMDP_METRICS, method="rmu", adapter="grun")], [], sweep)
    tex = latex(report)
    assert r"% selection rule: highest forget\_quality among complete trials" in tex
    assert r"% budget: 2 trials per (method, adapter) cell (4 trials in all, 3 complete)" in tex
    assert tex.count(r"\begin{tabular}{lrrrrrrrrr}") == 2 and tex.count(r"\bottomrule") == 2
    assert "\n".join([r"retain\_model & 1.0e0 & - & - & - & - & - & - & - & - \\", r"\midrule",
                      r"npo/grun & 2.2e-17 & 0.623 & 0.410 & 0.012 & 0.600 & 0.999 & 101,130 (7.51\%) & 520 & 41.0 s \\",
                      r"npo/lora & \multicolumn{9}{l}{\emph{no trial met the utility bar}} \\"]) in tex
    md = markdown(report)
    assert "## TOFU" in md and "## WMDP" in md and "| npo/lora | no trial met the utility bar |" in md
    assert "- selection rule: highest forget_quality among complete trials" in md
    assert "- npo/grun: trial 1 selected; 2 trials, Pareto front: 0, 1" in md
    assert "- npo/lora: none selected; 2 trials, Pareto front: none" in md
    table = list(csv.DictReader(io.StringIO(csv_text(report))))
    assert [r["kind"] for r in table] == ["tofu", "tofu", "tofu", "wmdp"]
    assert float(table[1]["forget_quality"]) == 2.2e-17 and table[1]["run_dir"] == str(Path("runs/a_b"))
    assert table[1]["trainable_percent"] == "7.512390653228107" and table[2]["note"] == NO_TRIAL_MET_BAR
    assert table[3]["forget_text_nll"] == "5.25" and table[3]["forget_quality"] == ""
    assert set(table[0]) >= {k for kind in COLUMNS for c in COLUMNS[kind] for k in c.keys}


# -- input checks without the CLI -----------------------------------------------------------
def _fake_run(folder: Path, card: dict, metrics: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "run_card.json").write_text(json.dumps(card))
    (folder / "metrics.json").write_text(json.dumps(metrics or {}))
    return folder


def test_bad_folders_are_refused_with_the_cause(tmp_path: Path) -> None:
    with pytest.raises(GrunError, match="does not exist"):
        read_run(tmp_path / "nope")
    with pytest.raises(GrunError, match="matches no folder"):
        expand([str(tmp_path / "none-*")])
    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "FAILED").write_text("error: NaN loss\ntraceback...")
    with pytest.raises(GrunError, match=r"not a complete run \(FAILED: error: NaN loss\)"):
        read_run(failed)
    interrupted = _fake_run(tmp_path / "int", {"command": "unlearn"})
    (interrupted / "INTERRUPTED").write_text("")
    with pytest.raises(GrunError, match=r"not a complete run \(INTERRUPTED\)"):
        read_run(interrupted)
    (tmp_path / "partial").mkdir()
    with pytest.raises(GrunError, match="no run_card.json"):
        read_run(tmp_path / "partial")
    ft = _fake_run(tmp_path / "ft", {"command": "finetune"})
    with pytest.raises(GrunError, match=r"`grun finetune` run.*grun eval run="):
        read_run(ft)
    ref = _fake_run(tmp_path / "ev", {"command": "eval", "config": {"model": {"name": "hf", "name_or_path":
                                      "meta-llama/Llama-3.1-8B"}}}, {"forget_quality": 0.5})
    assert read_run(ref).label == "model meta-llama/Llama-3.1-8B" and read_run(ref).is_reference


def test_tradeoff_plot_underflow_and_missing_values(tmp_path: Path) -> None:
    """forget quality 0 (underflow) is drawn on a floor, None is left out; both are said."""
    from grun_cli.report.tradeoff import tradeoff_plot

    points = [Point("npo/grun", "grun", {"forget_quality": fq, "model_utility": mu}, selected=i == 1, number=i)
              for i, (fq, mu) in enumerate([(1e-3, 0.5), (1e-2, 0.45), (0.0, 0.6), (None, 0.7), (1e-20, 0.55)])]
    report = Report([Row("target", "tofu", {"forget_quality": 1e-5, "model_utility": 0.62}, role="target")], points)
    path, why = tradeoff_plot(report, "tofu", tmp_path)
    assert path == tmp_path / "forget_quality_vs_utility.png" and why == ""
    assert _png_size(path) >= (900, 600)


# -- the real CLI on real run folders ---------------------------------------------------------
def _png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


@pytest.fixture(scope="module")
def env(cache_dir: Path) -> dict[str, str]:
    env = cli_env(cache_dir)
    env.setdefault("OMP_NUM_THREADS", "1")  # the tiny model gains nothing from 2
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> dict[str, Path]:
    """Three `grun unlearn` runs (NPO through GRUN at two learning rates, and through LoRA) in
    one multirun, the target model's `grun eval` and the retain model's."""
    root = tmp_path_factory.mktemp("report-runs")
    r = grun("unlearn", "--multirun", "method=npo", "adapter=grun,lora", "train.lr=4e-3,2e-2", *SMALL,
             "train.max_steps=3", "train.logging_steps=1", f"hydra.sweep.dir={root / 'trials'}", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    r = grun("eval", *SMALL, f"hydra.run.dir={root / 'target'}", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    retain_logs = Path(json.loads((root / "target" / "metrics.json").read_text())["forget_quality_reference"])
    r = grun("eval", *SMALL, f"model.name_or_path={retain_logs.parent.parent / 'checkpoint'}",
             f"hydra.run.dir={root / 'retain'}", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    trials = sorted((root / "trials").glob("[0-9]*"), key=lambda p: int(p.name))
    return {"root": root, "target": root / "target", "retain": root / "retain",
            **{str(i): t for i, t in enumerate(trials)}}


def _metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def _card(folder: Path) -> dict:
    return json.loads((folder / "run_card.json").read_text())


def _md_rows(text: str) -> dict[str, list[str]]:
    """label -> cells of every markdown table row (the header and rule lines left out)."""
    out = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| run |"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            out[cells[0]] = cells[1:]
    return out


def _expected_tofu_cells(m: dict) -> list[str]:
    """The TOFU columns as papers print them, written out independently of tables.py."""
    gate = f"{m['gate_auc']:.3f}" if "gate_auc" in m else "-"
    fq = m["forget_quality"]
    mantissa, exponent = f"{fq:.1e}".split("e")
    params = f"{m['trainable_parameters']:,} ({m['trainable_percent']:.3g}%)" if "trainable_parameters" in m else "-"
    steps = str(m["train_steps"]) if "train_steps" in m else "-"
    w = m.get("wall_time_s")
    wall = "-" if w is None else f"{w:.1f} s" if w < 60 else f"{w / 60:.1f} min"
    return [f"{mantissa}e{int(exponent)}" if fq else "0", f"{m['model_utility']:.3f}", f"{m['forget_Q_A_ROUGE']:.3f}",
            f"{m['forget_Q_A_Prob']:.3f}", f"{m['forget_truth_ratio']:.3f}", gate, params, steps, wall]


@pytest.mark.slow
def test_gates_json_of_a_grun_run(runs: dict[str, Path]) -> None:
    """GATES.json: one [layer 2, layer 3] pair per evaluated prompt of each set; its means are
    metrics.json's gate means. A LoRA run has no gate and no GATES.json."""
    for folder in (runs[k] for k in ("0", "1", "2", "3")):
        kind = _card(folder)["adapter_kind"]
        if kind != "grun":
            assert not (folder / "GATES.json").exists()
            continue
        gates, m = json.loads((folder / "GATES.json").read_text()), _metrics(folder)
        assert gates["layers"] == [2, 3] and set(gates["sets"]) == {"forget", "retain", "ra", "wf"}
        for name, values in gates["sets"].items():
            assert len(values) == 4 and all(len(v) == 2 and all(0 <= g <= 1 for g in v) for v in values)
            assert statistics.fmean(g for v in values for g in v) == pytest.approx(m[f"gate_{name}_mean"], abs=1e-6)
            for j, layer in enumerate(gates["layers"]):
                assert statistics.fmean(v[j] for v in values) == pytest.approx(m[f"gate_{name}_layer{layer}"], abs=1e-6)
    log = [json.loads(x) for x in (runs["0"] / "train_log.jsonl").read_text().splitlines()]
    assert all(f"gate_{s}_layer{n}" in log[0] for s in ("forget", "retain") for n in (2, 3))  # per-layer curves


@pytest.mark.slow
def test_report_of_run_folders(runs: dict[str, Path], env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "report"
    out.mkdir()
    (out / "FAILED").write_text("error: an earlier run into this folder\n")  # a rerun into a failed run's folder
    r = grun("report", f"runs=[{runs['target']},{runs['retain']},{runs['root'] / 'trials' / '*'}]", f"out={out}",
             env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (out / "FAILED").exists()  # the complete new run does not keep the old marker
    md = (out / "report.md").read_text()
    rows = _md_rows(md)
    retain_name = f"model {Path(_card(runs['retain'])['config']['model']['name_or_path']).parent.name}/checkpoint"
    trial_labels = {f"npo/{_card(runs[k])['adapter_kind']} ({k})": runs[k] for k in ("0", "1", "2", "3")}
    assert list(rows) == ["model tiny", retain_name, *trial_labels]  # references first
    for label, folder in {"model tiny": runs["target"], retain_name: runs["retain"], **trial_labels}.items():
        assert rows[label] == _expected_tofu_cells(_metrics(folder)), label
    table = {row["label"]: row for row in csv.DictReader(io.StringIO((out / "report.csv").read_text()))}
    assert list(table) == list(rows)
    for label, folder in trial_labels.items():
        m = _metrics(folder)
        assert float(table[label]["forget_quality"]) == m["forget_quality"]
        assert int(table[label]["trainable_parameters"]) == m["trainable_parameters"]
        assert table[label]["run_dir"] == str(folder)
    tex = (out / "report.tex").read_text()
    for label, cells in rows.items():
        assert " & ".join([label, *cells]).replace("%", r"\%") + r" \\" in tex
    assert "forget\\_Q" not in tex and "\\_" not in tex.split("\\begin")[1]  # nothing left to escape in the body
    for name in ("forget_quality_vs_utility.png", "training_curves.png", "gate_distributions.png"):
        w, h = _png_size(out / name)
        assert w >= 800 and h >= 500, name
    assert md.split("## Runs")[0].strip() in r.stdout and str(out / "report.tex") in r.stdout


def make_sweep(runs: dict[str, Path], dest: Path) -> Path:
    """A sweep directory as `grun sweep` lays it out, from real run folders: trial folders with
    trial.json (and one failed trial), trials.jsonl, sweep.json, best.json and references/."""
    objective = {"forget": {"metric": "forget_quality", "direction": "maximize", "log": True},
                 "utility": {"metric": "model_utility", "direction": "maximize", "log": False}}
    records = []
    for n in range(4):
        shutil.copytree(runs[str(n)], dest / str(n))
        card, m = _card(runs[str(n)]), _metrics(runs[str(n)])
        records.append({"number": n, "run_dir": str(n), "params": {"train.lr": card["config"]["train"]["lr"]},
                        "overrides": card["argv"], "status": "complete", "reason": None,
                        "method": card["method"], "adapter": card["adapter_kind"],
                        "objectives": {"forget": m["forget_quality"], "utility": m["model_utility"]},
                        "metrics": m, "wall_time_s": m["wall_time_s"]})
    (dest / "4").mkdir()
    (dest / "4" / "FAILED").write_text("error: unlearning produced non-finite likelihoods\n")
    records.append({"number": 4, "run_dir": "4", "params": {"train.lr": 1.0}, "status": "failed",
                    "reason": "unlearning produced non-finite likelihoods", "method": "npo", "adapter": "lora",
                    "objectives": {}, "metrics": {}, "wall_time_s": 1.0})
    for r in records:
        (dest / r["run_dir"] / "trial.json").write_text(json.dumps(r))
    (dest / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for role in ("target", "retain"):
        shutil.copytree(runs[role], dest / "references" / role)
        card = _card(runs[role])
        (dest / "references" / role / "run_card.json").write_text(json.dumps({**card, "role": role}))
    grun_trials = [r["number"] for r in records if r["adapter"] == "grun"]
    (dest / "sweep.json").write_text(json.dumps({"argv": ["method=npo"], "objective": objective,
                                                 "select": {"rule": "utility_bar", "min_utility": 0.9}}))
    (dest / "best.json").write_text(json.dumps({
        "rule": "highest forget_quality among complete trials with model_utility >= 0.9 x the target model's",
        "objective": objective, "select": {"rule": "utility_bar", "min_utility": 0.9},
        "target_utility": 0.0, "bar": 0.0,
        "cells": {"npo/grun": {"selected": grun_trials[1], "reason": "selected", "pareto": grun_trials,
                               "trials": 2, "complete": 2, "failed": 0},
                  "npo/lora": {"selected": None, "reason": "no trial reached model_utility >= 0.9",
                               "pareto": [], "trials": 3, "complete": 2, "failed": 1}}}))
    return dest


@pytest.mark.slow
def test_report_of_a_sweep(runs: dict[str, Path], env: dict[str, str], tmp_path: Path) -> None:
    sweep = make_sweep(runs, tmp_path / "sweep")
    best = json.loads((sweep / "best.json").read_text())
    chosen = best["cells"]["npo/grun"]["selected"]
    out = tmp_path / "report"
    r = grun("report", f"sweep_dir={sweep}", f"out={out}", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    md = (out / "report.md").read_text()
    rows = _md_rows(md)
    assert list(rows) == ["target", "retain", "npo/grun", "npo/lora"]
    assert rows["npo/grun"] == _expected_tofu_cells(_metrics(sweep / str(chosen)))
    assert rows["target"] == _expected_tofu_cells(_metrics(runs["target"]))
    assert rows["npo/lora"][0] == NO_TRIAL_MET_BAR and set(rows["npo/lora"][1:]) == {""}
    assert f"- selection rule: {best['rule']}" in md
    assert "- budget: trials per cell: npo/grun 2, npo/lora 3 (5 trials in all, 4 complete)" in md
    lr = _card(sweep / str(chosen))["config"]["train"]["lr"]
    front = ", ".join(str(n) for n in best["cells"]["npo/grun"]["pareto"])
    assert f"- npo/grun: trial {chosen} selected (train.lr={lr}); 2 trials, Pareto front: {front}" in md
    assert f"- npo/grun: `{sweep / str(chosen)}` (trial {chosen})" in md
    assert r"\multicolumn{9}{l}{\emph{no trial met the utility bar}}" in (out / "report.tex").read_text()
    table = {row["label"]: row for row in csv.DictReader(io.StringIO((out / "report.csv").read_text()))}
    assert table["npo/grun"]["trial"] == str(chosen) and table["npo/lora"]["note"] == NO_TRIAL_MET_BAR
    assert table["retain"]["role"] == "retain"
    for name in ("forget_quality_vs_utility.png", "training_curves.png", "gate_distributions.png"):
        w, h = _png_size(out / name)
        assert w >= 800 and h >= 500, name


@pytest.mark.slow
def test_bad_inputs_end_in_one_line(runs: dict[str, Path], env: dict[str, str], tmp_path: Path) -> None:
    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "FAILED").write_text("error: boom\n")
    cases = [
        ([f"runs=[{runs['0']},{tmp_path / 'missing'}]"], f"runs: {tmp_path / 'missing'} does not exist"),
        ([f"runs=[{runs['0']},{failed}]"], f"runs: {failed} is not a complete run (FAILED: error: boom)"),
        ([f"runs=[{tmp_path / 'nothing-*'}]"], "matches no folder"),
        ([f"sweep_dir={runs['root'] / 'trials'}"], "has no best.json, so it is not a finished `grun sweep`"),
        ([], "nothing to report: give runs="),
    ]
    for i, (args, message) in enumerate(cases):
        out = tmp_path / f"out{i}"
        r = grun("report", *args, f"out={out}", env=env)
        assert r.returncode == 2, (args, r.stderr[-2000:])
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("grun report: error: ") and message in lines[0], lines
        assert not list(out.glob("report.[mct]*")) and not list(out.glob("*.png"))  # nothing half-made
    out = tmp_path / "skip"
    r = grun("report", f"runs=[{runs['0']},{failed}]", "skip_incomplete=true", "plots=false", f"out={out}", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert list(_md_rows((out / "report.md").read_text())) == [f"npo/{_card(runs['0'])['adapter_kind']}"]
    assert not list(out.glob("*.png"))
