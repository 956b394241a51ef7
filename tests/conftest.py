"""Shared fixtures: the real data copies (skipped when absent), a CLI runner, a tiny cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path | None:
    env = os.environ.get("GRUN_DATA_DIR")
    for candidate in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (candidate / "tofu" / "full.json").is_file():
            return candidate.resolve()
    return None


SHARED_DATA = _shared_data()
needs_shared_tofu = pytest.mark.skipif(
    SHARED_DATA is None,
    reason="real TOFU copy not found (set GRUN_DATA_DIR or place it at ../shared/data/tofu)",
)


@pytest.fixture(scope="session")
def tofu_dir() -> Path:
    if SHARED_DATA is None:
        pytest.skip("real TOFU copy not found (set GRUN_DATA_DIR or ../shared/data/tofu)")
    return SHARED_DATA / "tofu"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model cache for the whole session, so the tiny model is built once per data set."""
    return tmp_path_factory.mktemp("grun-cache")


@pytest.fixture
def clean_env(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for CLI subprocesses: no GRUN_DATA_DIR unless a test sets it, W&B off."""
    env = {k: v for k, v in os.environ.items() if k != "GRUN_DATA_DIR"}
    env.update(GRUN_CACHE_DIR=str(cache_dir), WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"))
    monkeypatch.delenv("GRUN_DATA_DIR", raising=False)
    return env


def grun(*args: str, env: dict[str, str], cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """Run the real `grun` console script."""
    exe = Path(sys.executable).with_name("grun")
    return subprocess.run([str(exe), *args], env=env, cwd=cwd or REPO, capture_output=True,
                          text=True, timeout=timeout)
