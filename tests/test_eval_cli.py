"""`grun eval` and the TOFU evaluation: OpenUnlearning-format logs, the retain reference,
the adapter active during evaluation, attacks, and a clear line when no reference exists."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from grun_cli.errors import GrunError
from grun_cli.eval.reference import read_logs
from grun_cli.eval.tofu import summarise
from grun_cli.eval.tofu_metrics import UTILITY_TERMS, forget_quality, model_utility

from conftest import GOOD_TARGET, SMALL_DATA, grun

HEADLINE = ["forget_quality", "model_utility", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_truth_ratio",
            *UTILITY_TERMS]


def test_unlearn_run_reports_every_metric(grun_gd_run) -> None:
    out, _ = grun_gd_run
    m = json.loads((out / "metrics.json").read_text())
    for key in HEADLINE:
        assert isinstance(m[key], float) and math.isfinite(m[key]), key
    logs = read_logs(out)
    # the headline numbers are the aggregates of the per-sample logs
    forget_tr = [v["score"] for v in logs["forget_truth_ratio"]["value_by_index"].values()]
    assert len(forget_tr) == 40
    assert m["forget_truth_ratio"] == pytest.approx(sum(min(t, 1 / t) for t in forget_tr) / 40, rel=1e-6)
    assert m["model_utility"] == pytest.approx(model_utility({k: m[k] for k in UTILITY_TERMS}))
    ref = read_logs(m["forget_quality_reference"])  # the auto-built tiny retain model's logs
    ref_tr = [v["score"] for v in ref["forget_truth_ratio"]["value_by_index"].values()]
    assert m["forget_quality"] == pytest.approx(forget_quality(forget_tr, ref_tr))
    rouge = logs["forget_Q_A_ROUGE"]["value_by_index"]["0"]
    assert set(rouge) >= {"rougeL_recall", "rouge1_recall", "rougeL_f1", "input", "ground_truth", "generation"}
    assert set(logs["forget_Q_A_PERT_Prob"]["value_by_index"]["0"]) == {"prob", "avg_loss"}


def test_eval_of_a_run_applies_the_edit_and_matches_the_run(grun_gd_run, clean_env: dict[str, str],
                                                            tmp_path: Path) -> None:
    out, _ = grun_gd_run
    r = grun("eval", f"run={out}", "logger=none", "eval.attacks=[paraphrase]", f"hydra.run.dir={tmp_path}",
             env=clean_env)
    assert r.returncode == 0, r.stderr[-4000:]
    again = json.loads((tmp_path / "metrics.json").read_text())
    trained = json.loads((out / "metrics.json").read_text())
    for key in HEADLINE:
        # the attack adds pairs, so answers may share batches differently from the run's own
        # evaluation: float32 rounding of other batch shapes moves an average loss by up to
        # ~4e-5 (benchmarks/eval_speed.py), a probability by as much relatively (seen once: 1.5e-5
        # on world facts). A run evaluated without its edit would be off by orders of magnitude.
        assert again[key] == pytest.approx(trained[key], rel=1e-4, abs=1e-9), key
    for key in ("paraphrase_forget_Q_A_Prob", "paraphrase_forget_Q_A_ROUGE", "paraphrase_forget_truth_ratio",
                "paraphrase_forget_quality"):
        assert key in again
    assert "forget_quality" in r.stdout and "TOFU_EVAL.json" in r.stdout


def test_edit_on_differs_from_base_and_edit_off_equals_it(grun_gd_run) -> None:
    from grun_cli.api import load_run
    from grun_cli.data import make_source
    from grun_cli.eval.tofu import Evaluator, eval_sets
    from grun_cli.models.loading import load_model

    out, _ = grun_gd_run
    run = load_run(out)
    card = json.loads((out / "run_card.json").read_text())
    sets = eval_sets(make_source(card["config"]["data"]), max_rows=6)
    cfg = {**card["config"]["eval"], "max_new_tokens": 30}

    def evaluate(model, adapter):
        logs = Evaluator(model, run.tokenizer, run.template, cfg, run.max_length, adapter).run(sets)
        return {k: v["agg_value"] for k, v in logs.items()}

    edited = evaluate(run.model, run.adapter)
    with run.disabled():
        off = evaluate(run.model, run.adapter)
    base = load_model({"name": "hf", "name_or_path": card["base_model"]["source"], "dtype": "float32"},
                      lambda: [], "/nonexistent")
    plain = evaluate(base.model, None)
    assert edited["forget_Q_A_Prob"] < plain["forget_Q_A_Prob"] / 5
    assert off == plain


def test_missing_reference_is_one_clear_line(grun_gd_run, clean_env: dict[str, str], tmp_path: Path) -> None:
    out, _ = grun_gd_run
    card = json.loads((out / "run_card.json").read_text())
    r = grun("eval", "model=hf", f"model.name_or_path={card['base_model']['source']}", *SMALL_DATA,
             "eval.max_rows=5", "eval.max_new_tokens=10", f"hydra.run.dir={tmp_path}", env=clean_env)
    assert r.returncode == 0, r.stderr[-4000:]
    assert r.stderr.count("forget_quality: no retain-model reference; set eval.retain_logs=") == 1
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["forget_quality"] is None and m["model_utility"] >= 0 and "forget_Q_A_ROUGE" in m
    assert "forget_quality" in r.stdout and "n/a" in r.stdout


def test_retain_logs_option_and_openunlearning_format(grun_gd_run, clean_env: dict[str, str],
                                                      tmp_path: Path) -> None:
    out, _ = grun_gd_run
    from grun_cli.data import make_source

    card = json.loads((out / "run_card.json").read_text())
    forget = make_source(card["config"]["data"]).rows("forget05_perturbed")
    # an OpenUnlearning-written reference: string indices, {"score": tr}, other metrics alongside,
    # and each ROUGE entry's input the whole prompt in the model's chat template
    chat = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant."
            "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{q}<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n")

    def ou_log(questions: list[str]) -> dict:
        return {"forget_truth_ratio": {"agg_value": 0.6, "value_by_index": {
                    str(i): {"score": 0.5 + i / 100} for i in range(40)}},
                "forget_Q_A_Prob": {"agg_value": 0.1, "value_by_index": {}},
                "forget_Q_A_ROUGE": {"agg_value": 0.2, "value_by_index": {
                    str(r["index"]): {"rougeL_recall": 0.2, "input": chat.format(q=q), "ground_truth": r["answer"],
                                      "generation": "I don't know."} for r, q in zip(forget, questions, strict=True)}}}

    (tmp_path / "ou").mkdir()
    (tmp_path / "ou" / "TOFU_EVAL.json").write_text(json.dumps(ou_log([r["question"] for r in forget])))
    shifted = [r["question"] for r in forget[1:] + forget[:1]]  # the retain logs of other questions
    (tmp_path / "other.json").write_text(json.dumps(ou_log(shifted)))
    started = time.time()
    r = grun("eval", f"run={out}", "logger=none", f"eval.retain_logs={tmp_path / 'other.json'}",
             f"hydra.run.dir={tmp_path / 'other'}", env=clean_env)
    assert r.returncode == 2 and "made for another forget set" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "other" / "TOFU_EVAL.json").exists() and time.time() - started < 120  # before evaluating
    r = grun("eval", f"run={out}", "logger=none", f"eval.retain_logs={tmp_path / 'ou'}", "eval.max_new_tokens=10",
             f"hydra.run.dir={tmp_path / 'run'}", env=clean_env)
    assert r.returncode == 0, r.stderr[-4000:]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    mine = [v["score"] for v in read_logs(tmp_path / "run")["forget_truth_ratio"]["value_by_index"].values()]
    assert m["forget_quality"] == pytest.approx(forget_quality(mine, [0.5 + i / 100 for i in range(40)]))
    r = grun("eval", f"run={out}", "logger=none", f"eval.retain_logs={tmp_path / 'nope.json'}",
             f"hydra.run.dir={tmp_path / 'bad'}", env=clean_env)
    assert r.returncode == 2 and "nope.json: no such file" in r.stderr


def test_reading_logs_and_summarising() -> None:
    logs = {k: {"agg_value": 0.5, "value_by_index": {}} for k in UTILITY_TERMS}
    logs["forget_truth_ratio"] = {"agg_value": 0.0, "value_by_index": {"0": {"score": 1.0}, "1": {"score": 2.0},
                                                                       "2": {"score": 3.0}}}
    ref = {"forget_truth_ratio": {"value_by_index": {"0": {"score": 4.0}, "1": {"score": 5.0}, "2": {"score": 6.0}}}}
    out = summarise(logs, ref)
    assert out["forget_quality"] == pytest.approx(0.1) and out["model_utility"] == pytest.approx(0.5)
    assert summarise(logs, None)["forget_quality"] is None
    # a reference made for other forget questions is refused, not silently compared
    logs["forget_Q_A_ROUGE"] = {"agg_value": 0.0, "value_by_index": {"0": {"input": "Who is A?"}}}
    ref["forget_Q_A_ROUGE"] = {"value_by_index": {"0": {"input": "Who is B?"}}}
    with pytest.raises(GrunError, match="made for another forget set"):
        summarise(logs, ref)
    ref["forget_Q_A_ROUGE"] = {"value_by_index": {"0": {"input": "Who is A?"}}}
    assert summarise(logs, ref)["forget_quality"] == pytest.approx(0.1)


def test_bad_log_files(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(GrunError, match="not valid JSON"):
        read_logs(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"forget_Q_A_Prob": {}}))
    with pytest.raises(GrunError, match="no forget_truth_ratio entry"):
        read_logs(tmp_path / "y.json")


def test_eval_rejects_an_incomplete_run(clean_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "failed").mkdir()
    (tmp_path / "failed" / "FAILED").write_text("error: something broke\n")
    r = grun("eval", f"run={tmp_path / 'failed'}", "logger=none", f"hydra.run.dir={tmp_path / 'e'}", env=clean_env)
    assert r.returncode == 2 and "not a completed grun run" in r.stderr and "something broke" in r.stderr
    (tmp_path / "an-eval").mkdir()
    (tmp_path / "an-eval" / "run_card.json").write_text(json.dumps({"command": "eval", "config": {}}))
    r = grun("eval", f"run={tmp_path / 'an-eval'}", "logger=none", f"hydra.run.dir={tmp_path / 'f'}", env=clean_env)
    assert r.returncode == 2 and "is a `grun eval` run; give a `grun unlearn` or `grun finetune`" in r.stderr


def test_unknown_attack_and_truth_ratio_style(clean_env: dict[str, str], tmp_path: Path) -> None:
    r = grun("eval", *SMALL_DATA, GOOD_TARGET, "eval.attacks=[jailbreak]", f"hydra.run.dir={tmp_path / 'a'}",
             env=clean_env)
    assert r.returncode == 2 and "eval.attacks=['jailbreak']" in r.stderr


def test_wandb_gets_the_generations_table(grun_gd_run, clean_env: dict[str, str], tmp_path: Path) -> None:
    out, _ = grun_gd_run
    env = {**clean_env, "WANDB_MODE": "offline"}
    env.pop("WANDB_API_KEY", None)
    r = grun("eval", f"run={out}", "logger=wandb", "eval.max_rows=4", "eval.max_new_tokens=8",
             f"hydra.run.dir={tmp_path}", env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    tables = list(run.glob("files/media/table/generations_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["split", "question", "answer", "generation"] and len(table["data"]) == 8


def test_eval_max_rows_must_be_positive() -> None:
    from grun_cli.data import make_source
    from grun_cli.eval.tofu import eval_sets

    src = make_source({"name": "synthetic", "seed": 0, "num_authors": 30, "qa_per_author": 20, "forget_split": "forget05",
                       "subset": {"retain_authors": 3}})
    assert {k: len(v) for k, v in eval_sets(src, 5).items()} == {"forget": 5, "retain": 5, "ra": 5, "wf": 5}
    with pytest.raises(GrunError, match="eval.max_rows=0"):
        eval_sets(src, 0)


def test_same_question_matches_grun_and_openunlearning_inputs() -> None:
    from grun_cli.eval.tofu import check_reference_questions, same_question

    q = "Who wrote  'The River'?"
    assert same_question(q, "Who wrote 'The River'?")  # whitespace is not a difference
    assert same_question(q, "<|user|>\nWho wrote 'The River'?</s>\n<|assistant|>\n")
    assert not same_question(q, "Who wrote 'The Sea'?") and not same_question("", "anything")
    ref = {"forget_Q_A_ROUGE": {"value_by_index": {"3": {"input": "[INST] Who wrote 'The Sea'? [/INST]"}}}}
    check_reference_questions({"4": q}, ref)  # no entry at that index: nothing to compare
    with pytest.raises(GrunError, match="question 3 is .*The Sea.* made for another forget set"):
        check_reference_questions({"3": q}, ref)
