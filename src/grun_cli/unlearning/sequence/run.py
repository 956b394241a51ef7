"""`grun unlearn sequence=...`: forget requests one after the other in one run folder.

Each request trains on its own authors' rows, with a retain set that leaves out every author
forgotten so far (text data: its forget corpus, with the retain corpora). ``base_run=`` runs one
more request on an earlier run's model (sequence/base_run.py). GRUN adds one gated edit per
request on the frozen model (the earlier edits
frozen underneath, combined as ``adapter.combine`` says); LoRA and full fine-tuning go on
training from the previous request's weights. After each request the evaluation reports the
forget metrics of every request's authors so far (``request_<k>_*``), of all of them together
(``forgotten_*``) and the whole evaluation (model utility, ...), into
``requests/<k>/`` and one line of ``sequence.jsonl``.

The run folder is one run: ``adapter/`` is the final model (for GRUN, every request's edit with
its provenance), loaded by ``grun eval run=``, ``load_run`` and the lm-eval bridge like any other.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from grun_cli import distributed
from grun_cli.adapters import make_adapter
from grun_cli.adapters.base import base_fingerprint
from grun_cli.data import has_answers
from grun_cli.data.source import fingerprint
from grun_cli.errors import GrunError
from grun_cli.eval.run import run_evaluation
from grun_cli.io_utils import atomic_write_json, atomic_write_text
from grun_cli.runtime import plain_config, seed_everything
from grun_cli.scoring.text_nll import corpus_nll
from grun_cli.settings import Settings
from grun_cli.train.checkpoints import drop_checkpoints, train
from grun_cli.train.precision import keep_updates
from grun_cli.train.run_card import record_run
from grun_cli.train.tracking import start_tracking
from grun_cli.unlearning.sequence.base_run import BaseRun
from grun_cli.unlearning.sequence.requests import (
    Request,
    author_groups,
    corpus_groups,
    next_request,
    plan,
    request_rows,
    union_split,
)
from grun_cli.unlearning.sequence.resume import SEQUENCE_FILE, request_folder, resumed
from grun_cli.unlearning.setup import prepare_caches, setup

log = logging.getLogger("grun.sequence")

#: The per-request line's headline values (when the evaluation gives them).
LINE_KEYS = ("forget_quality", "model_utility", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_truth_ratio",
             "retain_Q_A_Prob", "ra_Q_A_Prob_normalised", "wf_Q_A_Prob_normalised",
             "gate_forget_mean", "gate_retain_mean")


def run_sequence(cfg: DictConfig, settings: Settings, out: Path) -> dict[str, Any]:
    if distributed.world_size() > 1:
        raise GrunError("sequence=... runs in one process (each request trains, then evaluates); start it "
                        "without accelerate launch")
    started = time.time()
    base_run = BaseRun.read(cfg.base_run) if cfg.get("base_run") else None
    new_split = str(cfg.data.get("forget_split"))
    if has_answers(cfg.data):  # (text: the requests are forget corpora, the forget texts all of them)
        split = base_run.union_split(new_split) if base_run else union_split(cfg.sequence)
        with open_dict(cfg):  # the evaluation's forget set (and its retain reference) is the union
            cfg.data.forget_split = split
    config = plain_config(cfg)
    s = setup(cfg, settings)
    retain_split = str(cfg.sequence.get("retain_split") or "full")
    base_print = base_fingerprint(s.loaded.model)  # before an earlier run's weights are loaded
    adapter: Any = None
    lines: list[dict[str, Any]] = []
    checkpoint = None
    if cfg.get("resume"):  # (base_run= is refused with resume=: it is one request)
        requests = plan(cfg.sequence, s.source)
        lines, adapter, checkpoint = resumed(s, out, requests)
        log.info("resume=%s: %d of %d requests finished%s", out, len(lines), len(requests),
                 f"; request {len(lines) + 1} goes on from {checkpoint}" if checkpoint else "")
    elif base_run:
        requests = base_run.requests(s.source)
        requests.append(next_request(s.source, new_split, requests, split))
        lines = base_run.lines(s.source)
        adapter = base_run.load(s, s.source)
        log.info("base_run=%s: %d earlier requests (%s adapter); one more: %s", base_run.path, len(lines),
                 base_run.kind, new_split)
    else:
        requests = plan(cfg.sequence, s.source)
    log.info("sequence: %d requests over %s: %s", len(requests), s.source.forget_split,
             "; ".join(f"{r.number}: {r.name} ({r.record()})" for r in requests))
    forgotten = [a for r in requests[: len(lines)] for a in r.authors]
    tracker = start_tracking(cfg.logger, out, config, job_type="unlearn", name=out.name)
    try:
        for request in requests[len(lines):]:
            adapter, line = _one_request(s, request, adapter, forgotten, retain_split, out, tracker, requests,
                                         checkpoint)
            checkpoint = None
            forgotten.extend(request.authors)
            lines.append(line)
            # the line first, then the model with its request count: a stop between redoes the request
            atomic_write_text(out / SEQUENCE_FILE, "".join(json.dumps(x, sort_keys=True) + "\n" for x in lines))
            s.save_adapter(adapter, out / "adapter", s.base_record(adapter, base_print), requests_done=request.number)
            tracker.log({"sequence/request": request.number,
                         **{f"sequence/{k}": v for k, v in line["metrics"].items() if isinstance(v, int | float)}},
                        axis="sequence/request")
            print(line_text(line), flush=True)
        if adapter is None:  # full fine-tuning resumed after its last request: its weights are loaded
            adapter = next_adapter(s, None, {})
        base = s.base_record(adapter, base_print)
        metrics = {**lines[-1]["metrics"], **adapter.describe(), "requests": len(requests),
                   "wall_time_s": round(time.time() - started, 1)}
        record_run(
            out, "unlearn", config, metrics, tracker=tracker, wall_time_s=metrics["wall_time_s"],
            adapter=str(out / "adapter"), base_model=base, method=s.method.name, adapter_kind=adapter.kind,
            efficiency=adapter.describe(),
            data={"source": s.source.describe(), "forget_split": s.source.forget_split, "retain_split": retain_split,
                  "pairing": str(cfg.pairing), "idk_answers": s.idk_source,
                  "sequence": [line["request"] for line in lines],
                  **({"base_run": str(base_run.path)} if base_run else {})})
    except BaseException as e:
        tracker.finish(exit_code=1)
        if isinstance(e, KeyboardInterrupt) and not getattr(e, "checkpoint", None) and lines and not base_run:
            e.checkpoint = str(out / "adapter")  # the CLI says how to resume
        raise
    tracker.finish()
    return metrics


def _one_request(s: Any, request: Request, previous: Any, forgotten: list[int], retain_split: str, out: Path,
                 tracker: Any, requests: list[Request], checkpoint: Path | None = None) -> tuple[Any, dict[str, Any]]:
    """Train (from ``checkpoint`` when a resumed sequence stopped during this request's
    training) and evaluate one request; returns the adapter (the next request builds on it) and
    its sequence.jsonl line."""
    cfg = s.cfg
    started = time.time()
    folder = request_folder(out, request.number)
    forget_rows, retain_rows = request_rows(s.source, request, forgotten, retain_split)
    log.info("request %d/%d (%s): forget %d rows of %s, retain %d rows (%s without %d forgotten authors)",
             request.number, len(requests), request.name, len(forget_rows), list(request.corpora or request.authors),
             len(retain_rows), "retain corpora" if request.corpora else retain_split,
             len(forgotten) + len(request.authors))
    dataset = s.dataset(forget_rows, retain_rows)
    seed_everything(int(cfg.seed) + request.number - 1)  # each request's edit from its own seed
    info = {**request.record(), "forget_rows": len(forget_rows), "retain_rows": len(retain_rows),
            "fingerprint": fingerprint(forget_rows + retain_rows), "method": s.method.name}
    adapter = next_adapter(s, previous, info)
    # protocol official: the edit trained alone on the base model (the earlier edits off, the
    # reference the base); stacked: on top of the earlier edits, against the model they make
    alone = adapter.alone() if protocol(cfg) == "official" else contextlib.nullcontext()
    with alone:
        caches = prepare_caches(s.settings, s.method, adapter, dataset, s.tokenizer.pad_token_id)
        master = keep_updates(adapter.model, s.settings.train)
        trainer = s.trainer(adapter, dataset, folder / "trainer", tracker, master)
        train(trainer, "unlearn", checkpoint)
        master.restore()
    info["train_steps"] = trainer.state.global_step
    if adapter.kind == "grun":
        adapter.cfg["request"] = info
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "train_log.jsonl",
                      "".join(json.dumps(h, sort_keys=True) + "\n" for h in trainer.state.log_history))
    drop_checkpoints(folder)
    metrics = evaluate(s, adapter, folder, requests[: request.number])
    metrics.update(caches)
    metrics["train_steps"] = trainer.state.global_step
    metrics["wall_time_s"] = round(time.time() - started, 1)
    atomic_write_json(folder / "metrics.json", metrics)
    line = {"request": info, "adapter": adapter.kind, "method": s.method.name, "seed": int(cfg.seed),
            "forgotten_authors": len(forgotten) + len(request.authors), "metrics": metrics}
    return adapter, line


def protocol(cfg: Any) -> str:
    """``sequence.protocol``: official (each GRUN request's edit trained alone on the base model,
    the edits combined at inference with the release's scale 0.6 N + 0.6) | stacked (each new
    edit trained with the earlier ones active)."""
    return str((cfg.get("sequence") or {}).get("protocol") or "stacked")


def next_adapter(s: Any, previous: Any, info: dict[str, Any]) -> Any:
    """The adapter the next request trains: GRUN, a fresh gated edit over the earlier ones
    (frozen); LoRA and full, the same weights trained further."""
    cfg = s.cfg
    settings = s.settings.adapter
    if protocol(cfg) == "official":  # the edits combined as the release's MultipleGate does
        settings = settings.model_copy(update={"combine": "official"})
    if previous is None:
        return make_adapter(s.loaded.model, settings, model_layers=cfg.model.grun_layers)
    if previous.kind != "grun":
        previous.next_request()
        return previous
    earlier = [*zip(previous.stack, previous.stack_info, strict=True),
               (previous.edits, previous.cfg.pop("request", {}))]
    previous.detach()
    adapter = make_adapter(s.loaded.model, settings, model_layers=cfg.model.grun_layers)
    for edits, provenance in earlier:
        adapter.push_stack(edits, provenance)
    return adapter


def evaluate(s: Any, adapter: Any, folder: Path, done: list[Request]) -> dict[str, Any]:
    """The evaluation after a request: TOFU with every finished request's authors as a group and
    all of them together (``eval.enabled``), else the answer probabilities of the probe rows."""
    cfg = s.cfg
    if not s.source.has_answers:
        return _evaluate_text(s, adapter, folder, done)
    groups = author_groups([(r.number, r.authors) for r in done])
    if cfg.eval.enabled:
        return run_evaluation(cfg, folder, model=adapter.model, tokenizer=s.tokenizer, source=s.source,
                              adapter=adapter, text_nll=False, forget_groups=groups, plan=s.plan)
    metrics: dict[str, Any] = {}
    for name, authors in groups.items():
        wanted = set(authors)
        rows = [r for r in s.source.rows("forget") if r["author"] in wanted]
        metrics.update(s.probe(adapter.model, {"forget": rows}, f"{name}_", adapter=adapter))
    metrics.update(s.probe(adapter.model, s.probe_sets([], s.source.rows("retain")), "", adapter=adapter))
    return metrics


def _evaluate_text(s: Any, adapter: Any, folder: Path, done: list[Request]) -> dict[str, Any]:
    """Text data: the held-out NLL of each finished request's corpora and of all of them, then the
    evaluation (lm-eval tasks, held-out NLL, gates) or, without it, the held-out NLL alone."""
    cfg = s.cfg
    metrics = corpus_nll(adapter.model, s.tokenizer, s.template, s.source, corpus_groups(done), s.max_length,
                         batch_size=s.settings.probe.batch_size, adapter=adapter)
    if cfg.eval.enabled:
        folder.mkdir(parents=True, exist_ok=True)
        metrics.update(run_evaluation(cfg, folder, model=adapter.model, tokenizer=s.tokenizer, source=s.source,
                                      adapter=adapter, plan=s.plan))
    else:
        metrics.update(s.probe(adapter.model, {}, "", adapter=adapter))
    return metrics


def line_text(line: dict[str, Any]) -> str:
    """One console line per request: forget quality / Prob on its own authors and on all so far,
    model utility."""
    m, k = line["metrics"], line["request"]["request"]

    def fmt(key: str) -> str:
        v = m.get(key)
        return "n/a" if v is None else f"{v:.4g}"

    if f"request_{k}_forget_text_nll" in m:
        return (f"request {k} ({line['request']['name']}): held-out NLL of its corpus {fmt(f'request_{k}_forget_text_nll')}"
                f", all forgotten {fmt('forgotten_forget_text_nll')}, retain {fmt('retain_text_nll')}")
    if "model_utility" in m:
        return (f"request {k} ({line['request']['name']}): this request FQ {fmt(f'request_{k}_forget_quality')} "
                f"Prob {fmt(f'request_{k}_forget_Q_A_Prob')}; all forgotten FQ {fmt('forgotten_forget_quality')} "
                f"Prob {fmt('forgotten_forget_Q_A_Prob')}; model utility {fmt('model_utility')}")
    return (f"request {k} ({line['request']['name']}): forget answer prob {fmt(f'request_{k}_forget_answer_prob')}"
            f", all forgotten {fmt('forgotten_forget_answer_prob')}, retain {fmt('retain_answer_prob')}")
