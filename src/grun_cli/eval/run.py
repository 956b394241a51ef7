"""The evaluation orchestration, for `grun eval` and the end of `grun unlearn`: the TOFU
evaluation (metrics, forget quality against a retain model's logs, gates, prompt attacks),
lm-eval-harness tasks for WMDP / MMLU with the held-out text NLL, and the model attacks (each
evaluates again with the model changed, then puts it back). ``check_evaluation`` refuses a bad
evaluation setting before anything trains.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from grun_cli.errors import GrunError
from grun_cli.io_utils import atomic_write_json
from grun_cli.models.template import PromptTemplate
from grun_cli.train.tracking import Tracker

log = logging.getLogger("grun.eval")


#: what an attack reports next to the unattacked values (the rest stays in attacks/<name>/)
ATTACK_METRICS = ("forget_quality", "model_utility", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_truth_ratio",
                  "gate_auc", "gate_forget_mean", "forget_text_nll", "retain_text_nll", "wmdp_bio_acc",
                  "wmdp_cyber_acc", "mmlu_acc")
ATTACKS_DIR = "attacks"


def plain_eval(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg.eval, resolve=True)  # type: ignore[return-value]


def model_attacks(cfg: DictConfig, out: Path, evaluate: Any, *, model: Any, tokenizer: Any, source: Any,
                  adapter: Any) -> dict[str, Any]:
    """Each model attack of ``eval.attacks`` in turn: the model changed, ``evaluate(folder)``
    (the evaluation again, its logs into ``out/attacks/<name>/``), the model put back. Returns
    ``<attack>_<metric>`` for the headline metrics and what the attack itself measured."""
    from grun_cli.eval.attacks import AttackTarget, make_attacks

    found: dict[str, Any] = {}
    target = AttackTarget(model=model, adapter=adapter, tokenizer=tokenizer,
                          template=PromptTemplate.for_model(cfg.model), source=source,
                          max_length=int(cfg.model.max_length), seed=int(cfg.seed))
    for attack in make_attacks(cfg.eval.get("attacks"), cfg.eval.get("attack_settings")):
        if not attack.changes_model:
            continue
        folder = out / ATTACKS_DIR / attack.name
        folder.mkdir(parents=True, exist_ok=True)
        log.info("attack %s: evaluating again with the model changed", attack.name)
        started = time.time()
        with attack.applied(target):
            measured = evaluate(folder)
        atomic_write_json(folder / "metrics.json", {**measured, "attack": attack.info})
        found.update({f"{attack.name}_{k}": measured[k] for k in ATTACK_METRICS if k in measured})
        found.update({f"{attack.name}_{k}": v for k, v in attack.info.items()})
        found[f"{attack.name}_time_s"] = round(time.time() - started, 1)
    return found


def prompt_attack_gates(cfg: DictConfig, adapter: Any, tokenizer: Any, template: PromptTemplate,
                        sets: dict[str, Any]) -> dict[str, float]:
    """GRUN's mean gate on the forget questions as each prompt attack asks them: does the gate
    still recognise them?"""
    from grun_cli.eval.attacks import PromptAttack, make_attacks
    from grun_cli.eval.gates import gate_values

    found = {}
    for attack in make_attacks(cfg.eval.get("attacks"), cfg.eval.get("attack_settings")):
        if isinstance(attack, PromptAttack):
            attack.prepare(sets)
            values = gate_values(adapter, tokenizer, template, [attack.question(r) for r in sets["forget"]])
            if values is not None:
                found[f"{attack.name}_gate_forget_mean"] = values.mean().item()
    return found


def tofu_evaluation(cfg: DictConfig, out: Path, *, model: Any, tokenizer: Any, source: Any,
                    adapter: Any = None, tracker: Tracker | None = None,
                    forget_groups: Mapping[str, Sequence[int]] | None = None,
                    plan: Any = None) -> tuple[dict[str, Any], str]:
    """Evaluate one model on TOFU; write TOFU_EVAL.json into ``out``; return the headline
    metrics (plus gate diagnostics for GRUN) and where the forget-quality reference came from.
    ``forget_groups`` (name -> authors, e.g. a sequence's requests) adds each group's forget
    metrics (``group_summary``). ``plan``: the run's target plan, when the caller made it."""
    from grun_cli.eval.gates import gate_report
    from grun_cli.eval.reference import LOG_FILE, resolve_reference, write_logs
    from grun_cli.eval.tofu import Evaluator, eval_sets, summarise

    template = PromptTemplate.for_model(cfg.model)
    max_length = int(cfg.model.max_length)
    sets = eval_sets(source, cfg.eval.get("max_rows"))
    log.info("TOFU eval sets: %s", ", ".join(f"{k} {len(v)}" for k, v in sets.items()))
    started = time.time()
    logs = Evaluator(model, tokenizer, template, cfg.eval, max_length, adapter).run(sets)

    def evaluate_reference(model_cfg: Any) -> dict[str, Any]:
        from grun_cli.models.loading import load_model

        ref = load_model(model_cfg, source.tokenizer_corpus, cfg.paths.cache_dir)
        return Evaluator(ref.model, ref.tokenizer, template, {**plain_eval(cfg), "attacks": []},
                         max_length).run(sets)

    reference, ref_source = resolve_reference(cfg, evaluate_reference, plan)
    metrics: dict[str, Any] = summarise(logs, reference)
    if forget_groups:
        from grun_cli.eval.tofu import group_summary

        rows = {}
        for name, authors in forget_groups.items():
            wanted = set(authors)
            rows[name] = [r["index"] for r in sets["forget"] if r["author"] in wanted]
        metrics.update(group_summary(logs, reference, rows, str(cfg.eval.truth_ratio)))
    if adapter is not None:
        metrics.update(gate_report(adapter, tokenizer, template, sets, save_to=out))
        metrics.update(prompt_attack_gates(cfg, adapter, tokenizer, template, sets))

    def attacked(attack_out: Path) -> dict[str, Any]:
        attack_logs = Evaluator(model, tokenizer, template, {**plain_eval(cfg), "attacks": []}, max_length,
                                adapter).run(sets)
        write_logs(attack_out / LOG_FILE, attack_logs)
        found = summarise(attack_logs, reference)
        if adapter is not None:
            found.update(gate_report(adapter, tokenizer, template, sets))
        return found

    metrics.update(model_attacks(cfg, out, attacked, model=model, tokenizer=tokenizer, source=source,
                                 adapter=adapter))
    metrics["eval_time_s"] = round(time.time() - started, 1)
    write_logs(out / LOG_FILE, logs)
    if tracker is not None:
        tracker.summary({k: v for k, v in metrics.items() if v is not None})
        tracker.table("generations", ["split", "question", "answer", "generation"], [
            [key, v["input"], v["ground_truth"], v["generation"]]
            for key in ("forget", "retain")
            for v in list(logs[f"{key}_Q_A_ROUGE"]["value_by_index"].values())[: int(cfg.eval.log_generations)]
        ])
    return metrics, ref_source


def harness_evaluation(cfg: DictConfig, out: Path, *, model: Any, tokenizer: Any, source: Any,
                       adapter: Any = None, tracker: Tracker | None = None, text_nll: bool = True,
                       attacks: bool = True) -> dict[str, Any]:
    """lm-eval tasks on the model with its edit; held-out text NLL and gates for text data
    (``text_nll=False`` when the caller measured them already); then ``eval.attacks``, each
    measuring all of it again (``attacks=False``: this is one of them)."""
    from grun_cli.eval.lm_eval_run import make_lm, run_tasks

    template = PromptTemplate.for_model(cfg.model)
    max_length = int(cfg.model.max_length)
    metrics: dict[str, Any] = {}
    if text_nll and cfg.eval.get("text_nll"):  # (QA data: none held out)
        metrics.update(source.heldout_nll(model, tokenizer, template, max_length, int(cfg.eval.nll_batch_size),
                                          adapter=adapter))
    if adapter is not None:  # on the held-out texts (QA data: none, TOFU's evaluation reads its gates)
        from grun_cli.eval.gates import gate_report

        metrics.update(gate_report(adapter, tokenizer, template, source.gate_sets({}),
                                   lambda row: source.gate_prompt(tokenizer, template, row, max_length), save_to=out))
    lm = make_lm(model, tokenizer, adapter, batch_size=cfg.eval.batch_size, add_bos=template.add_bos,
                 max_length=cfg.eval.get("max_length"))
    task_metrics, results = run_tasks(lm, cfg.eval, cfg.paths.data_dir, seed=int(cfg.seed))
    metrics.update(task_metrics)
    atomic_write_json(out / "LM_EVAL.json", results)
    if attacks:
        def attacked(attack_out: Path) -> dict[str, Any]:
            return harness_evaluation(cfg, attack_out, model=model, tokenizer=tokenizer, source=source,
                                      adapter=adapter, attacks=False)

        metrics.update(model_attacks(cfg, out, attacked, model=model, tokenizer=tokenizer, source=source,
                                     adapter=adapter))
    if tracker is not None:
        tracker.summary({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        sources = metrics["lm_eval_task_sources"]
        tracker.table("lm_eval", ["task", "acc", "acc_stderr", "n", "questions from"],
                      [[t, metrics.get(f"{t}_acc"), metrics.get(f"{t}_acc_stderr"), metrics.get(f"{t}_n"), src]
                       for t, src in sources.items()])
    return metrics


def check_evaluation(cfg: DictConfig, source: Any, adapter: str | None = None, plan: Any = None) -> None:
    """Refuse, before any training, an evaluation that cannot run on this data / these tasks
    (or these attacks on a run trained with ``adapter``; ``plan``: the run's target plan)."""
    from grun_cli.eval.attacks import problems

    kind = str(cfg.eval.kind)
    if kind not in ("tofu", "lm_eval"):
        raise GrunError(f"eval.kind={kind} is not one of tofu, lm_eval")
    found = problems(cfg.eval.get("attacks"), cfg.eval.get("attack_settings"), kind, adapter)
    if found:
        raise GrunError(found[0])
    if kind == "tofu" and not source.has_answers:
        raise GrunError(f"eval=tofu needs QA data (data=tofu or synthetic), not data={cfg.data.name}; "
                        "use eval=wmdp")
    from grun_cli.eval.reference import read_logs, retain_logs_setting

    logs = retain_logs_setting(cfg, plan) if kind == "tofu" else None
    if logs:  # read and matched now, not after the evaluation
        from grun_cli.eval.tofu import check_reference_questions, eval_sets

        forget = eval_sets(source, cfg.eval.get("max_rows"))["forget"]
        check_reference_questions({str(r["index"]): r["question"] for r in forget},
                                  read_logs(logs, cfg.data.get("forget_split")))
    if kind == "lm_eval":
        from grun_cli.eval.lm_eval_run import check_tasks

        check_tasks(cfg.eval, cfg.paths.data_dir)


def run_evaluation(cfg: DictConfig, out: Path, *, model: Any, tokenizer: Any, source: Any,
                   adapter: Any = None, tracker: Tracker | None = None, text_nll: bool = True,
                   forget_groups: Mapping[str, Sequence[int]] | None = None, plan: Any = None) -> dict[str, Any]:
    """The evaluation ``eval.kind`` names: tofu or lm_eval (checked by check_evaluation first).
    ``forget_groups``: TOFU's forget metrics per group of authors too (tofu_evaluation);
    ``plan``: the run's target plan (models/resolve.py), made once by the caller."""
    if str(cfg.eval.kind) == "tofu":
        metrics, ref_source = tofu_evaluation(cfg, out, model=model, tokenizer=tokenizer, source=source,
                                              adapter=adapter, tracker=tracker, forget_groups=forget_groups,
                                              plan=plan)
        return {**metrics, "forget_quality_reference": ref_source}
    return harness_evaluation(cfg, out, model=model, tokenizer=tokenizer, source=source, adapter=adapter,
                              tracker=tracker, text_nll=text_nll)
