"""lm-eval-harness tasks for `grun eval eval=wmdp` (or eval=lm_eval): which task definitions
to use, running them batched on the model with its edit active, and their metrics.

``wmdp_bio``, ``wmdp_cyber`` and ``mmlu`` are lm-eval's own tasks (loaded from the Hub); with
``eval.task_source=local`` — the default when GRUN_DATA_DIR is set or HF_HUB_OFFLINE=1 — they
are grun's copies with the same prompt format on local files (``lm_tasks/*_local.yaml``):
``eval.files.<task>`` or the copy under ``$GRUN_DATA_DIR``. Any other task name passes through.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from grun_cli.data.mcq_files import default_file
from grun_cli.errors import GrunError, first_line
from grun_cli.eval.lm_harness import GrunLM

log = logging.getLogger(__name__)

TASK_DIR = Path(__file__).with_name("lm_tasks")
LOCAL_TASKS = ("wmdp_bio", "wmdp_cyber", "mmlu")
SOURCES = ("auto", "local", "hub")


def use_local(source: str, data_dir: str | None) -> bool:
    if source not in SOURCES:
        raise GrunError(f"eval.task_source={source} is not one of {', '.join(SOURCES)}")
    if source == "auto":
        return bool(data_dir) or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")
    return source == "local"


def resolve_tasks(tasks: list[str], source: str, files: Mapping[str, str] | None,
                  data_dir: str | None) -> tuple[list[Any], dict[str, str], dict[str, str]]:
    """(task specs for lm-eval, lm-eval name -> requested name, requested name -> where from)."""
    if not tasks:
        raise GrunError("eval.tasks is empty; name lm-eval tasks, e.g. eval.tasks=[wmdp_bio,mmlu]")
    files = {k: str(v) for k, v in dict(files or {}).items() if v}
    unknown = set(files) - set(LOCAL_TASKS)
    if unknown:
        raise GrunError(f"eval.files names {sorted(unknown)}; local files are for {', '.join(LOCAL_TASKS)}")
    local = use_local(source, data_dir)
    specs: list[Any] = []
    names: dict[str, str] = {}
    origins: dict[str, str] = {}
    for task in tasks:
        if task in LOCAL_TASKS and (local or task in files):
            path = Path(files[task]).expanduser() if task in files else default_file(task, data_dir)
            if path is None or not path.is_file():
                raise GrunError(f"{task}: no local questions file ({path or 'GRUN_DATA_DIR unset'}); set "
                                f"eval.files.{task}=<jsonl of question/choices/answer> or GRUN_DATA_DIR, or "
                                "eval.task_source=hub to use lm-eval's task from the Hub")
            specs.append(local_task_config(task, path.resolve()))
            names[f"{task}_local"] = task
            origins[task] = f"local file {path.resolve()}"
        else:
            specs.append(task)
            names[task] = task
            origins[task] = "lm-eval task definition (Hub data)"
    return specs, names, origins


def resolve_configured(eval_cfg: Mapping[str, Any], data_dir: str | None) -> tuple[list[Any], dict[str, str], dict[str, str]]:
    """resolve_tasks on the eval config's tasks, task_source and files."""
    return resolve_tasks(list(eval_cfg.get("tasks") or []), str(eval_cfg["task_source"]),
                         eval_cfg.get("files"), data_dir)


@functools.lru_cache(maxsize=1)
def task_manager() -> Any:
    """lm-eval's task index with grun's local tasks; built once per process (it reads every
    task YAML lm-eval ships, seconds of work), shared by the pre-training check and the run."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASK_DIR))


def local_task_config(task: str, path: Path) -> dict[str, Any]:
    """The shipped ``<task>_local.yaml`` (includes and !function resolved) reading ``path``."""
    from lm_eval.tasks._yaml_loader import load_yaml

    config = dict(load_yaml(TASK_DIR / f"{task}_local.yaml", resolve_func=True))
    config["dataset_kwargs"] = {"data_file": str(path)}
    return config


def make_lm(model: Any, tokenizer: Any, adapter: Any, *, batch_size: Any, add_bos: bool,
            max_length: int | None = None) -> Any:
    return GrunLM(pretrained=model, tokenizer=tokenizer, adapter=adapter, batch_size=batch_size,
                  add_bos=add_bos, max_length=max_length)


def run_tasks(lm: Any, eval_cfg: Mapping[str, Any], data_dir: str | None,
              seed: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """Evaluate ``lm`` on eval.tasks. Returns metrics (``<task>_acc``, ``<task>_acc_stderr``,
    ``<task>_acc_norm`` where the task defines it, ``<task>_n``, throughput) and lm-eval's
    per-task results (JSON-ready)."""
    import lm_eval
    import torch

    specs, names, origins = resolve_configured(eval_cfg, data_dir)
    log.info("lm-eval tasks: %s", ", ".join(f"{k} ({v})" for k, v in origins.items()))
    started = time.time()
    try:
        results = lm_eval.simple_evaluate(
            model=lm, tasks=specs, task_manager=task_manager(),
            num_fewshot=eval_cfg.get("num_fewshot"), limit=eval_cfg.get("limit"),
            random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
            bootstrap_iters=int(eval_cfg["bootstrap_iters"]), log_samples=False)
    except (FileNotFoundError, ConnectionError, OSError) as e:
        raise GrunError(f"lm-eval could not load a task's data: {first_line(e) or type(e).__name__}; offline, use "
                        "eval.task_source=local (or set GRUN_DATA_DIR)") from e
    except torch.OutOfMemoryError as e:
        raise GrunError(f"out of memory in lm-eval at batch size {lm.batch_size}: lower eval.batch_size") from e
    elapsed = time.time() - started
    metrics: dict[str, Any] = {}
    questions = 0
    for name, res in results["results"].items():
        task = names.get(name, name)
        found = task_metrics(task, res)
        if not found and name in names:
            raise GrunError(f"lm-eval task {name} returned no metric ({sorted(res)}); check the task")
        metrics.update(found)
        n = results.get("n-samples", {}).get(name, {}).get("effective")
        if n is not None:
            metrics[f"{task}_n"] = int(n)
            questions += int(n)
    metrics["lm_eval_task_sources"] = {names.get(k, k): v for k, v in origins.items()}
    metrics["lm_eval_seconds"] = round(elapsed, 2)
    metrics["lm_eval_questions_per_s"] = round(questions / elapsed, 2) if elapsed > 0 else None
    metrics["lm_eval_batch_size"] = getattr(lm, "last_batch_size", None) or lm.batch_size
    metrics["lm_eval_num_fewshot"] = eval_cfg.get("num_fewshot") or 0
    scoring = getattr(lm, "scoring_seconds", 0.0)
    if scoring:
        metrics["lm_eval_scoring_questions_per_s"] = round(questions / scoring, 2)
    raw = {key: results.get(key) for key in ("results", "n-samples", "versions", "n-shot", "higher_is_better")}
    raw["task_sources"] = metrics["lm_eval_task_sources"]
    return metrics, json.loads(json.dumps(raw, default=str))


def task_metrics(task: str, res: Mapping[str, Any]) -> dict[str, Any]:
    """Every numeric metric of one task's results: ``<task>_<metric>`` (filter ``none``) or
    ``<task>_<metric>_<filter>``, with ``_stderr`` beside it."""
    out: dict[str, Any] = {}
    for key, value in res.items():
        if "," not in key or "_stderr," in key or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        metric, filt = key.split(",", 1)
        name = f"{task}_{metric}" if filt == "none" else f"{task}_{metric}_{filt}"
        out[name] = float(value)
        err = res.get(f"{metric}_stderr,{filt}")
        out[f"{name}_stderr"] = float(err) if isinstance(err, (int, float)) else None
    return out


def check_tasks(eval_cfg: Mapping[str, Any], data_dir: str | None) -> None:
    """Fail before any training: unknown task names, missing local question files."""
    specs, _, _ = resolve_configured(eval_cfg, data_dir)
    names = [s for s in specs if isinstance(s, str)]
    if names:
        known = set(task_manager().all_tasks)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise GrunError(f"eval.tasks: unknown lm-eval task(s) {unknown}; `lm-eval ls tasks` lists them")


def table(metrics: Mapping[str, Any]) -> str:
    rows = [("task", "acc", "± stderr", "n")]
    for key in sorted(k for k in metrics if k.endswith("_acc")):
        task = key[: -len("_acc")]
        err = metrics.get(f"{key}_stderr")
        rows.append((task, f"{metrics[key]:.4f}", f"{err:.4f}" if err is not None else "-",
                     str(metrics.get(f"{task}_n", "-"))))
    return "\n".join(f"  {a:<16} {b:>8} {c:>9} {d:>6}" for a, b, c, d in rows)
