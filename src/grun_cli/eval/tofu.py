"""The TOFU evaluation: one batched teacher-forced pass over every (question, answer) pair
the metrics need (each question's prompt run once, its answers scored from the prompt's KV
cache), one batched greedy generation pass, then the metrics of ``tofu_metrics``.

Results come back as OpenUnlearning-format per-sample logs,
``{metric: {"agg_value": float, "value_by_index": {"<row index>": {...}}}}``, so our logs and
OpenUnlearning's published ones can stand in for each other (e.g. as forget-quality references).
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from grun_cli.data.source import spread
from grun_cli.errors import GrunError
from grun_cli.eval import tofu_metrics as tm
from grun_cli.eval.attacks import PromptAttack, make_attacks
from grun_cli.models.template import PromptTemplate
from grun_cli.scoring.generation import greedy_answers
from grun_cli.scoring.likelihood import shared_prompt_avg_loss
from grun_cli.scoring.rouge import rouge_scores

log = logging.getLogger(__name__)

Row = dict[str, Any]
Logs = dict[str, dict[str, Any]]

#: TOFU's evaluation sets: key -> split name (the forget set follows data.forget_split).
EVAL_SETS = {"forget": "{forget}_perturbed", "retain": "retain_perturbed",
             "ra": "real_authors_perturbed", "wf": "world_facts_perturbed"}


def eval_sets(source: Any, max_rows: int | None = None) -> dict[str, list[Row]]:
    sets = {k: source.rows(v.format(forget=source.forget_split)) for k, v in EVAL_SETS.items()}
    if max_rows is not None and int(max_rows) <= 0:
        raise GrunError(f"eval.max_rows={max_rows}: give a positive number, or null for every row")
    if max_rows:
        sets = {k: spread(rows, int(max_rows)) for k, rows in sets.items()}
    return sets


def _correct_answer(key: str, row: Row) -> str:
    """Truth ratio's "correct" side: the paraphrased answer (forget, retain) or the answer."""
    return row["paraphrased_answer"] if key in ("forget", "retain") else row["answer"]


def _plain_question(row: Row) -> str:
    return row["question"]


def _base(key: str) -> str:
    """The evaluation set a log key is of: ``prompt_format_forget`` -> ``forget``."""
    return key if key in EVAL_SETS else key.rsplit("_", 1)[-1]


class Evaluator:
    """Runs the passes for one model and turns them into logs."""

    def __init__(self, model: Any, tokenizer: Any, template: PromptTemplate, cfg: Mapping[str, Any],
                 max_length: int, adapter: Any = None) -> None:
        self.model, self.tokenizer, self.template, self.adapter = model, tokenizer, template, adapter
        self.cfg, self.max_length = cfg, max_length
        self.style = str(cfg["truth_ratio"])
        if self.style not in tm.TRUTH_RATIO_STYLES:
            raise GrunError(f"eval.truth_ratio={self.style} is not one of {', '.join(tm.TRUTH_RATIO_STYLES)}")

        attacks = make_attacks(cfg.get("attacks"), cfg.get("attack_settings"))
        self.prompt_attacks = [a for a in attacks if isinstance(a, PromptAttack)]

    # -- passes ------------------------------------------------------------------------
    def _losses(self, pairs: set[tuple[str, str]]) -> dict[tuple[str, str], float]:
        ordered = sorted(pairs)
        losses = shared_prompt_avg_loss(self.model, self.tokenizer, self.template, ordered,
                                        max_length=self.max_length, batch_size=int(self.cfg["batch_size"]),
                                        desc="eval: teacher-forced", adapter=self.adapter)
        return dict(zip(ordered, losses, strict=True))

    def _generations(self, questions: Mapping[str, str]) -> dict[str, str]:
        """Greedy answers to each question (keys), batched by the reference answers' lengths."""
        ordered = sorted(questions)
        lengths = [len(self.tokenizer(questions[q], add_special_tokens=False)["input_ids"]) for q in ordered]
        gens = greedy_answers(self.model, self.tokenizer, self.template, ordered,
                              max_new_tokens=int(self.cfg["max_new_tokens"]),
                              batch_size=int(self.cfg["gen_batch_size"]), desc="eval: generation",
                              adapter=self.adapter, expected_lengths=lengths)
        return dict(zip(ordered, gens, strict=True))

    def run(self, sets: Mapping[str, list[Row]]) -> Logs:
        """Every set's logs; each prompt attack adds ``<attack>_forget_*`` logs: the forget rows
        with the attack's question, scored in the same passes."""
        views: dict[str, tuple[list[Row], Any]] = {k: (rows, _plain_question) for k, rows in sets.items()}
        for attack in self.prompt_attacks:
            attack.prepare(sets)
            views[f"{attack.name}_forget"] = (sets["forget"], attack.question)
        pairs: set[tuple[str, str]] = set()
        questions: dict[str, str] = {}  # question -> reference answer
        for key, (rows, ask) in views.items():
            base = _base(key)
            for r in rows:
                q = ask(r)
                questions[q] = r["answer"]
                pairs.add((q, r["answer"]))
                pairs.add((q, _correct_answer(base, r)))
                pairs.update((q, w) for w in r["perturbed_answer"])
        loss = self._losses(pairs)
        gen = self._generations(questions)
        logs: Logs = {}
        for key, (rows, ask) in views.items():
            logs.update(self._set_logs(key, rows, ask, loss, gen))
        return logs

    # -- metrics -----------------------------------------------------------------------
    def _set_logs(self, key: str, rows: list[Row], ask: Any, loss: Mapping[tuple[str, str], float],
                  gen: Mapping[str, str]) -> Logs:
        base = _base(key)
        prob_vals, norm_vals, tr_vals, rouge_vals = {}, {}, {}, {}
        para_vals, pert_vals = {}, {}
        rouges = rouge_scores([gen[ask(r)] for r in rows], [r["answer"] for r in rows])
        for r, rouge in zip(rows, rouges, strict=True):
            idx, q = str(r["index"]), ask(r)
            a_loss = loss[(q, r["answer"])]
            wrong = [loss[(q, w)] for w in r["perturbed_answer"]]
            correct = loss[(q, _correct_answer(base, r))]
            prob_vals[idx] = {"prob": tm.prob(a_loss), "avg_loss": a_loss}
            norm_vals[idx] = {"prob": tm.normalised_prob(a_loss, wrong)}
            tr_vals[idx] = {"score": tm.truth_ratio(correct, wrong, self.style)}
            rouge_vals[idx] = {**rouge, "input": q, "ground_truth": r["answer"], "generation": gen[q]}
            pert_vals[idx] = {"prob": [tm.prob(x) for x in wrong], "avg_loss": wrong}
            if base in ("forget", "retain"):
                para_vals[idx] = {"prob": tm.prob(correct), "avg_loss": correct}

        def agg(values: dict[str, dict[str, Any]], field: str) -> float:
            return statistics.fmean(v[field] for v in values.values())

        tr_name = f"{key}_truth_ratio" if base == "forget" else f"{key}_Truth_Ratio"
        out: Logs = {
            f"{key}_Q_A_ROUGE": {"agg_value": agg(rouge_vals, "rougeL_recall"), "value_by_index": rouge_vals},
            tr_name: {"agg_value": tm.aggregate_truth_ratio([v["score"] for v in tr_vals.values()], base,
                                                            self.style),
                      "value_by_index": tr_vals},
        }
        out[f"{key}_Q_A_Prob"] = {"agg_value": agg(prob_vals, "prob"), "value_by_index": prob_vals}
        out[f"{key}_Q_A_PERT_Prob"] = {
            "agg_value": statistics.fmean(statistics.fmean(v["prob"]) for v in pert_vals.values()),
            "value_by_index": pert_vals}
        if base in ("forget", "retain"):
            out[f"{key}_Q_A_PARA_Prob"] = {"agg_value": agg(para_vals, "prob"), "value_by_index": para_vals}
        else:
            out[f"{key}_Q_A_Prob_normalised"] = {"agg_value": agg(norm_vals, "prob"), "value_by_index": norm_vals}
        return out


def forget_ratios(logs: Mapping[str, Any], key: str = "forget_truth_ratio") -> dict[str, float]:
    entry = logs.get(key) or {}
    return {str(i): float(v["score"]) for i, v in (entry.get("value_by_index") or {}).items()
            if v and v.get("score") is not None}


def _plain(text: str) -> str:
    return " ".join(str(text).split())


def same_question(question: str, logged_input: str) -> bool:
    """Whether a log entry's ``input`` is this question: the question itself (grun's logs) or
    a formatted prompt that contains it (OpenUnlearning's logs store the prompt with the
    model's chat template and system prompt around the question)."""
    q, logged = _plain(question), _plain(logged_input)
    return q == logged or (bool(q) and q in logged)


def check_reference_questions(questions: Mapping[str, str], reference: Mapping[str, Any]) -> None:
    """Refuse a retain reference whose forget questions differ from ``questions``
    (``{row index: question}``) at the same indices, e.g. logs of another forget split.
    Needs the questions, which the reference's ROUGE entries carry."""
    ref = (reference.get("forget_Q_A_ROUGE") or {}).get("value_by_index") or {}
    for idx, question in questions.items():
        other = ref.get(str(idx))
        if other and other.get("input") is not None and not same_question(question, other["input"]):
            raise GrunError(
                f"the retain reference's forget question {idx} is {_plain(other['input'])[-80:]!r}, ours is "
                f"{question[:60]!r}: it was made for another forget set; give the retain logs "
                "for this data.forget_split (retain99/95/90 for forget01/05/10)")


def check_same_questions(logs: Mapping[str, Any], reference: Mapping[str, Any]) -> None:
    """check_reference_questions with the questions of our own logs."""
    mine = (logs.get("forget_Q_A_ROUGE") or {}).get("value_by_index") or {}
    check_reference_questions({idx: entry["input"] for idx, entry in mine.items() if "input" in entry}, reference)


def summarise(logs: Logs, reference: Mapping[str, Any] | None) -> dict[str, float | None]:
    """Headline metrics: every agg_value, model_utility and forget_quality (None without a
    reference)."""
    metrics: dict[str, float | None] = {k: v["agg_value"] for k, v in logs.items()}
    metrics["model_utility"] = tm.model_utility({k: float(metrics[k]) for k in tm.UTILITY_TERMS})
    metrics["forget_quality"] = None
    if reference is not None:
        check_same_questions(logs, reference)
        mine, ref = forget_ratios(logs), forget_ratios(reference)
        shared = [i for i in mine if i in ref]
        if not ref:
            log.warning("the retain reference has no forget_truth_ratio values: forget_quality unavailable")
        else:
            if len(shared) != len(mine):
                log.warning("retain reference covers %d of %d forget questions; using all its values",
                            len(shared), len(mine))
                ref_values = list(ref.values())
            else:
                ref_values = [ref[i] for i in shared]
            metrics["forget_quality"] = tm.forget_quality(list(mine.values()), ref_values)
        for key in logs:  # prompt attacks: <attack>_forget_truth_ratio
            if key.endswith("_forget_truth_ratio") and ref:
                attacked = forget_ratios(logs, key)
                metrics[key.replace("_truth_ratio", "_quality")] = tm.forget_quality(list(attacked.values()),
                                                                                     list(ref.values()))
    return metrics


#: What each group of forget rows reports (``group_summary``).
GROUP_METRICS = ("forget_quality", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_truth_ratio")


def group_summary(logs: Logs, reference: Mapping[str, Any] | None, groups: Mapping[str, Sequence[int]],
                  style: str = "tofu") -> dict[str, float | None]:
    """The forget metrics over subsets of the forget rows (``groups``: name -> row indices),
    e.g. each forget request of a sequence: ``<name>_forget_Q_A_Prob`` etc., aggregated as over
    the whole set, and ``<name>_forget_quality`` from the truth ratios of those questions
    against the retain model's on the same questions (None without a reference)."""
    ref = forget_ratios(reference) if reference is not None else {}
    mine = forget_ratios(logs)
    prob = logs["forget_Q_A_Prob"]["value_by_index"]
    rouge = logs["forget_Q_A_ROUGE"]["value_by_index"]
    out: dict[str, float | None] = {}
    for name, indices in groups.items():
        keys = [str(i) for i in indices]
        missing = [k for k in keys if k not in mine]
        if not keys or missing:
            raise GrunError(f"forget group {name}: rows {missing[:5] or keys} are not in the evaluation's forget set")
        ratios = [mine[k] for k in keys]
        out[f"{name}_forget_Q_A_Prob"] = statistics.fmean(prob[k]["prob"] for k in keys)
        out[f"{name}_forget_Q_A_ROUGE"] = statistics.fmean(rouge[k]["rougeL_recall"] for k in keys)
        out[f"{name}_forget_truth_ratio"] = tm.aggregate_truth_ratio(ratios, "forget", style)
        shared = [ref[k] for k in keys if k in ref]
        out[f"{name}_forget_quality"] = tm.forget_quality(ratios, shared) if len(shared) == len(keys) else None
    return out


def is_finite(metrics: Mapping[str, Any]) -> bool:
    return all(v is None or not isinstance(v, float) or math.isfinite(v) for v in metrics.values())


HEADLINE = ("forget_quality", "model_utility", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_truth_ratio",
            "retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio", "ra_Q_A_Prob_normalised",
            "ra_Q_A_ROUGE", "ra_Truth_Ratio", "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio")


def table(metrics: Mapping[str, Any], keys: Sequence[str] = HEADLINE) -> str:
    rows = [(k, metrics[k]) for k in keys if k in metrics]
    rows += [(k, v) for k, v in metrics.items() if k not in keys]
    width = max(len(k) for k, _ in rows)
    fmt = lambda v: "n/a" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    return "\n".join(f"  {k:<{width}}  {fmt(v)}" for k, v in rows)
