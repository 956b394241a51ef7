"""The run card: what produced an artifact (config, versions, code, data) and how it went."""

from __future__ import annotations

import platform
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from grun_cli import __version__
from grun_cli.config import PACKAGE_DIR

LIBRARIES = ("torch", "transformers", "tokenizers", "datasets", "accelerate", "peft",
             "hydra-core", "omegaconf", "wandb", "lm-eval", "pyvene", "pyreft", "numpy")


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version(), "grun-cli": __version__}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state(path: Path = PACKAGE_DIR) -> dict[str, Any] | None:
    """Commit of the grun-cli checkout running this code (None for an installed wheel)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def run_card(command: str, config: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "command": command,
        "argv": sys.argv[1:],
        "grun_version": __version__,
        "git": git_state(),
        "versions": library_versions(),
        **fields,
        "config": dict(config),
    }
