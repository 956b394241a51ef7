"""Shared fixtures: the real data copies (skipped when absent), a CLI runner, a tiny cache."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path | None:
    env = os.environ.get("GRUN_DATA_DIR")
    for candidate in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (candidate / "tofu" / "full.json").is_file():
            return candidate.resolve()
    return None


def pytest_configure(config: pytest.Config) -> None:
    """Share the cores among pytest-xdist's workers: torch's default (one thread per core) in
    every worker, and in every `grun` it starts, oversubscribes the CPU, and oversubscribed
    OpenMP threads spin against each other (an eval ran 5-10x slower that way on 2 cores).
    An OMP_NUM_THREADS the user set wins.

    pytest-xdist's controller runs no test and must set nothing: its workers inherit its
    environment, and a value it set (one thread per core, as for a run without workers) would
    read as the user's in every worker. That doubled every test's time on 2 cores until
    December 2026 (2 workers x 2 threads)."""
    if "PYTEST_XDIST_WORKER" not in os.environ and getattr(config.option, "numprocesses", None):
        return
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // workers))
    os.environ["OMP_NUM_THREADS"] = threads
    os.environ.setdefault("MKL_NUM_THREADS", threads)
    import torch

    torch.set_num_threads(int(threads))


#: The files that take longest (end-to-end CLI runs), longest first: pytest-xdist (`--dist
#: loadfile --no-loadscope-reorder`, the Makefile's) hands files out in this order, so the long
#: ones start first and the workers finish together instead of one idling while the other runs
#: the last long file (xdist's own order, by number of tests, put them last).
LONGEST_FIRST = ("test_smollm2.py", "test_resume.py", "test_sequence_cli.py", "test_distributed.py",
                 "test_wmdp_cli.py", "test_repro.py", "test_sweep_cli.py", "test_cli.py", "test_eval_cli.py",
                 "test_unlearn_cli.py", "test_report.py", "test_attacks.py", "test_unlearn_steps.py",
                 "test_target_plan.py", "test_run_integrity.py", "test_interrupts.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the others keep their order


SHARED_DATA = _shared_data()
needs_shared_tofu = pytest.mark.skipif(
    SHARED_DATA is None,
    reason="real TOFU copy not found (set GRUN_DATA_DIR or place it at ../shared/data/tofu)",
)


def new_adapter(model: Any, values: Any, model_layers: Any = None) -> Any:
    """``make_adapter`` with ``values`` over the adapter's shipped defaults (settings_check.group_settings)."""
    from grun_cli.adapters import make_adapter
    from grun_cli.settings_check import group_settings

    return make_adapter(model, group_settings("adapter", values), model_layers=model_layers)


def new_method(values: Any) -> Any:
    """``make_method`` with ``values`` over the method's shipped defaults (settings_check.group_settings)."""
    from grun_cli.methods import make_method
    from grun_cli.settings_check import group_settings

    return make_method(group_settings("method", values))


def _composer(primary: str) -> Iterator:
    """Compose ``primary`` (a grun command's config) with overrides, in process, as Hydra does."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from grun_cli.config import config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        yield lambda *overrides: compose(primary, overrides=list(overrides))
    GlobalHydra.instance().clear()


@pytest.fixture
def unlearn_composer() -> Iterator:
    yield from _composer("unlearn")


@pytest.fixture(scope="session")
def tofu_dir() -> Path:
    if SHARED_DATA is None:
        pytest.skip("real TOFU copy not found (set GRUN_DATA_DIR or ../shared/data/tofu)")
    return SHARED_DATA / "tofu"


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """The tiny base model (random weights) on a small synthetic corpus. Do not modify it in
    place: deep-copy ``tiny.model`` first."""
    from omegaconf import OmegaConf

    from grun_cli.config import config_dir
    from grun_cli.data.synthetic import generate
    from grun_cli.models.loading import load_model

    corpus = [t for r in generate(num_authors=30)["full"] for t in (r["question"], r["answer"])]
    cfg = OmegaConf.load(config_dir() / "model" / "tiny.yaml")
    return load_model(cfg, lambda: corpus, str(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model cache for the whole session, so the tiny model is built once per data set —
    shared by pytest-xdist's workers (grun locks each cache entry while one process builds it)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    path = root / "grun-cache"
    path.mkdir(exist_ok=True)
    return path


def cli_env(cache_dir: Path) -> dict[str, str]:
    """Environment for CLI subprocesses: this one without GRUN_DATA_DIR (a test that wants the
    real data sets it), the shared model cache, W&B off."""
    env = {k: v for k, v in os.environ.items() if k != "GRUN_DATA_DIR"}
    env.update(GRUN_CACHE_DIR=str(cache_dir), WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false")
    return env


@pytest.fixture
def clean_env(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for CLI subprocesses: no GRUN_DATA_DIR unless a test sets it, W&B off."""
    env = cli_env(cache_dir)
    monkeypatch.delenv("GRUN_DATA_DIR", raising=False)
    return env


def grun(*args: str, env: dict[str, str], cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """Run the real `grun` console script."""
    exe = Path(sys.executable).with_name("grun")
    return subprocess.run([str(exe), *args], env=env, cwd=cwd or REPO, capture_output=True,
                          text=True, timeout=timeout)


def grun_stopped(*args: str, ready: Path | Callable[[], bool], env: dict[str, str],
                 wait: int = 400) -> subprocess.CompletedProcess[str]:
    """Start the real `grun`, send it SIGTERM once ``ready`` exists (a checkpoint, a saved
    request...) or returns true; the ended process, its stderr captured."""
    import signal
    import time

    exe = Path(sys.executable).with_name("grun")
    proc = subprocess.Popen([str(exe), *args], env=env, cwd=REPO, text=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.time() + wait
        while not (ready() if callable(ready) else ready.is_file()):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.time() < deadline, f"no {ready} after {wait} s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", err)


# A small memorised target: 2 forget authors (40 rows) + 3 retain authors (60 rows).
SMALL_DATA = ["data.num_authors=30", "data.subset.retain_authors=3", "logger=none"]
GOOD_TARGET = 'target.overrides=["train.max_steps=200","extra_splits=[]","check.max_rows=0"]'


@pytest.fixture(scope="session")
def grun_gd_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One real `grun unlearn` (GRUN + GD, TOFU evaluation at the end) shared by tests."""
    out = tmp_path_factory.mktemp("grun-gd-run")
    env = cli_env(cache_dir)
    r = grun("unlearn", "method=gd", "adapter=grun", *SMALL_DATA, "probe.max_rows=100", GOOD_TARGET,
             "train.epochs=60", "train.lr=1e-2", f"hydra.run.dir={out}", env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    return out, r


def write_text_corpora(folder: Path, n: int = 30) -> Path:
    """Small forget (bio, cyber) and retain corpora in data=wmdp's file layout."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    topics = {"merge_forget_data_sum_gpt.jsonl": "virus", "cyber_forget_data_sum_gpt.jsonl": "exploit",
              "merge_retain_data_sum_gpt.jsonl": "river"}
    for name, topic in topics.items():
        with open(folder / name, "w") as f:
            for i in range(n):
                f.write(json.dumps({"text": f"text {i} about the {topic} number {i * 7 % 13} and more words "
                                            f"on {topic}s in general"}) + "\n")
    return folder


def write_mcq(path: Path, n: int = 8, rows: list[dict] | None = None) -> Path:
    """A multiple-choice file in the WMDP / MMLU local format (``rows`` or n generated ones)."""
    import json

    rows = rows or [{"question": f"Which {i}?", "choices": ["one", "two", "three", "four"], "answer": i % 4}
                    for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def mcq_overrides(folder: Path) -> list[str]:
    f = write_mcq(folder / "mcq.jsonl")
    return [f"eval.files.wmdp_bio={f}", f"eval.files.wmdp_cyber={f}", f"eval.files.mmlu={f}",
            "eval.batch_size=4"]
