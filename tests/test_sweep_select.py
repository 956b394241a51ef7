"""The selection rule, the Pareto front, objectives and the sweep records, on hand-made
trials (golden values worked out by hand in the comments)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from grun_cli.errors import GrunError
from grun_cli.sweep.records import read_trials, refresh_trials_file, swept_params
from grun_cli.sweep.select import Objective, pareto_front, select_best, utility_bar
from grun_cli.sweep.summary import best, console_table

FQ = Objective("forget_quality", "maximize", log=True)
MU = Objective("model_utility", "maximize")


def trial(number: int, fq: float | None, mu: float | None, status: str = "complete", cell=("npo", "grun")):
    metrics = {k: v for k, v in (("forget_quality", fq), ("model_utility", mu)) if v is not None}
    return {"number": number, "status": status, "method": cell[0], "adapter": cell[1], "metrics": metrics,
            "params": {"train.lr": str(number)}}


# target utility 0.93 -> bar 0.9 x 0.93 = 0.837
TRIALS = [
    trial(0, 1e-5, 0.85),
    trial(1, 1e-3, 0.80),        # best forget quality, below the bar
    trial(2, 1e-5, 0.90),        # ties trial 0 on forget quality, better utility
    trial(3, None, None, "failed"),
    trial(4, math.nan, 0.95),    # NaN: never a candidate
    trial(5, 0.0, 0.99),         # an underflowed p-value: log10 floor, finite, last
    trial(6, 1e-5, 0.90),        # exact tie with trial 2: the earlier one wins
]


def test_objective_values() -> None:
    assert FQ.value({"forget_quality": 1e-17}) == pytest.approx(-17)
    assert FQ.value({"forget_quality": 0.0}) == Objective.FLOOR
    assert math.isnan(FQ.value({"forget_quality": None})) and math.isnan(FQ.value({}))
    assert math.isnan(MU.value({"model_utility": float("nan")})) and MU.value({"model_utility": 0.5}) == 0.5
    assert math.isnan(MU.value({"model_utility": True}))  # a bool is not a metric
    with pytest.raises(GrunError, match="direction=up is not one of maximize, minimize"):
        Objective.from_config({"metric": "x", "direction": "up"})


def test_utility_bar() -> None:
    assert utility_bar(0.93, 0.9, "maximize") == pytest.approx(0.837)
    assert utility_bar(5.0, 0.9, "minimize") == pytest.approx(5.0 / 0.9)  # a retain NLL may rise ~11%
    assert utility_bar(None, 0.9, "maximize") is None and utility_bar(float("nan"), 0.9, "maximize") is None


def test_select_best_with_bar_ties_nan_and_failures() -> None:
    chosen, reason = select_best(TRIALS, FQ, MU, utility_bar(0.93, 0.9, "maximize"))
    assert reason == "selected" and chosen["number"] == 2


def test_select_best_without_bar_takes_best_forget() -> None:
    chosen, _ = select_best(TRIALS, FQ, MU, None)
    assert chosen["number"] == 1


def test_select_best_all_below_bar() -> None:
    chosen, reason = select_best(TRIALS, FQ, MU, utility_bar(1.2, 0.9, "maximize"))
    assert chosen is None and reason == "no trial reached model_utility >= 1.08"


def test_select_best_nothing_finite() -> None:
    chosen, reason = select_best([trial(0, math.nan, 0.9), trial(1, None, None, "failed")], FQ, MU, 0.5)
    assert chosen is None and reason == "no complete trial with finite forget_quality and model_utility"


def test_select_best_minimised_utility() -> None:
    nll_f, nll_r = Objective("after_forget_text_nll"), Objective("after_retain_text_nll", "minimize")
    trials = [{"number": i, "status": "complete", "metrics": {"after_forget_text_nll": f, "after_retain_text_nll": r}}
              for i, (f, r) in enumerate([(9.0, 6.0), (7.0, 5.5), (6.0, 5.0)])]
    chosen, _ = select_best(trials, nll_f, nll_r, utility_bar(5.0, 0.9, "minimize"))  # bar 5.556
    assert chosen["number"] == 1


def test_pareto_front() -> None:
    points = [(FQ.value(t["metrics"]), MU.value(t["metrics"])) for t in TRIALS]
    # 0 is dominated by 2; 3 (no metrics) and 4 (NaN) are never on it; 2 and 6 are equal: both kept
    assert pareto_front(points) == [1, 2, 5, 6]
    assert pareto_front([(1.0, 5.0), (2.0, 6.0), (0.5, 4.0)], ("maximize", "minimize")) == [0, 1, 2]
    assert pareto_front([(1.0, 5.0), (1.0, 4.0)], ("maximize", "minimize")) == [1]
    assert pareto_front([]) == []


def test_best_json_per_cell() -> None:
    other = [trial(7, 1e-2, 0.5, cell=("gd", "full")), trial(8, 1e-4, 0.7, "interrupted", cell=("gd", "full"))]
    content = best(TRIALS + other, {"forget": FQ, "utility": MU}, {"rule": "utility_bar", "min_utility": 0.9},
                   {"model_utility": 0.93})
    assert content["bar"] == pytest.approx(0.837) and content["target_utility"] == 0.93
    assert "model_utility >= 0.9 x the target model's (0.93) = 0.837" in content["rule"]
    npo = content["cells"]["npo/grun"]
    assert (npo["selected"], npo["pareto"], npo["trials"], npo["complete"], npo["failed"]) == (2, [1, 2, 5, 6], 7, 6, 1)
    assert npo["params"] == {"train.lr": "2"} and npo["metrics"]["model_utility"] == 0.9
    gd = content["cells"]["gd/full"]
    assert gd["selected"] is None and gd["reason"].startswith("no trial reached") and gd["interrupted"] == 1
    pareto = best(TRIALS, {"forget": FQ, "utility": MU}, {"rule": "pareto", "min_utility": 0.9}, {"model_utility": 0.93})
    assert pareto["bar"] is None and pareto["cells"]["npo/grun"]["selected"] == 1
    with pytest.raises(GrunError, match="select.rule=best is not one of utility_bar, pareto"):
        best(TRIALS, {"forget": FQ, "utility": MU}, {"rule": "best"}, None)


def test_best_json_says_whether_each_space_reached_the_bar() -> None:
    """Each cell's complete trials on the two sides of the utility bar (issue 24: a LoRA space
    whose every trial left the target as it was 'selected' a trial that had not unlearned)."""
    above = [trial(10, 1e-20, 0.93, cell=("gd", "lora")), trial(11, 1e-19, 0.92, cell=("gd", "lora"))]
    content = best(TRIALS + above, {"forget": FQ, "utility": MU}, {"rule": "utility_bar", "min_utility": 0.9},
                   {"model_utility": 0.93})
    npo = content["cells"]["npo/grun"]["bar_sides"]
    assert npo == {"meet": 5, "miss": 1, "nearest_meeting": 0.85, "nearest_missing": 0.80, "reached": True}
    lora = content["cells"]["gd/lora"]["bar_sides"]
    assert (lora["meet"], lora["miss"], lora["nearest_meeting"], lora["reached"]) == (2, 0, 0.92, False)
    text = console_table(TRIALS + above, content)
    assert "utility bar 0.837: 5 trials meet it (nearest 0.85), 1 trial misses it (nearest 0.8)" in text
    assert "gd/lora: every complete trial meets the utility bar 0.837 (nearest 0.92)" in text
    assert "widen it" in text and "npo/grun: every" not in text
    assert "widen it" not in console_table(TRIALS + above, {**content, "finished": False})  # a sweep still running
    pareto = best(TRIALS, {"forget": FQ, "utility": MU}, {"rule": "pareto", "min_utility": 0.9}, {"model_utility": 0.93})
    assert pareto["cells"]["npo/grun"]["bar_sides"] is None


def test_records_from_trial_folders(tmp_path: Path) -> None:
    for t in TRIALS[:3]:
        (tmp_path / str(t["number"])).mkdir()
        (tmp_path / str(t["number"]) / "trial.json").write_text(json.dumps(t))
    (tmp_path / "10" / ".hydra").mkdir(parents=True)  # a trial killed before it wrote its record
    (tmp_path / "10" / ".hydra" / "overrides.yaml").write_text("- data=tofu\n- train.lr=0.004\n")
    (tmp_path / "10" / ".hydra" / "config.yaml").write_text("method:\n  name: npo\nadapter:\n  kind: grun\n")
    (tmp_path / "sweep.json").write_text(json.dumps({"overrides": ["data=tofu"]}))
    (tmp_path / "references").mkdir()
    trials = refresh_trials_file(tmp_path)
    assert [t["number"] for t in trials] == [0, 1, 2, 10]
    assert trials[-1]["status"] == "interrupted" and "killed" in trials[-1]["reason"]
    assert trials[-1]["params"] == {"train.lr": "0.004"}  # its settings, from Hydra's record
    assert (trials[-1]["method"], trials[-1]["adapter"]) == ("npo", "grun")
    lines = (tmp_path / "trials.jsonl").read_text().splitlines()
    assert [json.loads(x)["number"] for x in lines] == [0, 1, 2, 10] and read_trials(tmp_path) == trials


def test_swept_params() -> None:
    base = ["data=tofu", "train.lr=choice(1e-3,4e-3)"]
    assert swept_params(["data=tofu", "train.lr=0.001", "+adapter.x=[1,2]"], base) == {
        "train.lr": "0.001", "adapter.x": "[1,2]"}


def test_search_space_from_hydra_syntax() -> None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from grun_cli.sweep.optuna_study import search_space

    fixed, space = search_space({"adapter.layers": "choice([2,3],[0,1,2,3])", "train.epochs": "range(10,40,10)"},
                                ["data=tofu", "train.lr=tag(log,interval(1e-4,1e-2))", "adapter.rank=int(interval(2,8))"])
    assert fixed == ["data=tofu"]
    assert space["adapter.layers"] == CategoricalDistribution(["[2,3]", "[0,1,2,3]"])
    assert space["train.epochs"] == CategoricalDistribution(["10", "20", "30"])
    assert space["train.lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert space["adapter.rank"] == IntDistribution(2, 8)
    with pytest.raises(GrunError, match="the search space is empty"):
        search_space({}, ["data=tofu"])
    with pytest.raises(GrunError, match="needs positive bounds"):
        search_space({"train.lr": "tag(log,interval(0,1))"}, [])


def test_trial_threads() -> None:
    import os

    from grun_cli.commands.sweep import trial_threads

    assert trial_threads("auto", 1) is None  # one trial at a time: torch's own default
    assert trial_threads("auto", 2) == max(1, (os.cpu_count() or 1) // 2)
    assert trial_threads(3, 2) == 3
    with pytest.raises(GrunError, match="sweep.threads=0"):
        trial_threads(0, 1)


def test_references_wanted_and_given(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from grun_cli.sweep.references import adopt_target, wanted

    def cfg(model: str = "tiny", references: object = "auto", enabled: bool = True):
        return OmegaConf.create({"model": {"name": model}, "eval": {"enabled": enabled},
                                 "sweep": {"references": references}})

    slurm = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert wanted(cfg(), "BasicLauncher") and wanted(cfg(), slurm)  # the tiny model is cheap anywhere
    assert not wanted(cfg("llama3.1"), slurm)  # a login node must not load an 8B model
    assert wanted(cfg("llama3.1", True), slurm) and wanted(cfg("llama3.1"), "JoblibLauncher")
    assert not wanted(cfg(references=False), "BasicLauncher") and not wanted(cfg(enabled=False), "BasicLauncher")

    with pytest.raises(GrunError, match="not a completed `grun eval` run folder"):
        adopt_target(tmp_path / "nothing", tmp_path / "target")
    given = tmp_path / "eval"
    given.mkdir()
    (given / "metrics.json").write_text('{"model_utility": 0.5}')
    (given / "run_card.json").write_text('{"command": "eval"}')
    adopt_target(given, tmp_path / "sweep" / "references" / "target")
    assert json.loads((tmp_path / "sweep" / "references" / "target" / "metrics.json").read_text())["model_utility"] == 0.5
