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
from grun_cli.errors import GrunError

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


def read_run_card(run_dir: Path, command: str | None = None) -> dict[str, Any]:
    """The card of a completed run; a clear error (with the failure, if any) otherwise."""
    run_dir = Path(run_dir)
    path = run_dir / "run_card.json"
    if not path.is_file():
        failed = run_dir / "FAILED"
        why = failed.read_text().strip().splitlines()[0] if failed.is_file() else ""
        raise GrunError(f"{run_dir} is not a completed grun run (no run_card.json)"
                        + (f"; it failed: {why}" if why else "; is the path right?"))
    from grun_cli.integrity import read_json, verify

    for marker in ("FAILED", "INTERRUPTED"):  # complete = a card and no marker
        if (run_dir / marker).is_file():
            why = (run_dir / marker).read_text().strip().splitlines()[:1]
            raise GrunError(f"{run_dir} is marked {marker} ({why[0] if why else 'no reason recorded'}); it is not "
                            "a result: resume or rerun it")
    card = read_json(path, "run card")
    if command is not None and card.get("command") != command:
        raise GrunError(f"{run_dir} is a `grun {card.get('command')}` run, not `grun {command}`")
    verify(run_dir, card.get("files"), "run_card.json")
    return card


def trained_adapter(card: Mapping[str, Any] | None) -> str | None:
    """The adapter kind a `grun unlearn` run's card says it trained; None for any other card."""
    if not card or card.get("command") != "unlearn":
        return None
    return ((card.get("config") or {}).get("adapter") or {}).get("kind")


def write_run_card(run_dir: Path, card: Mapping[str, Any]) -> None:
    """The card, last, with the checksum of every result file: its presence marks a complete run."""
    from grun_cli.integrity import digests, result_files
    from grun_cli.io_utils import atomic_write_json

    run_dir = Path(run_dir)
    atomic_write_json(run_dir / "run_card.json", {**card, "files": digests(run_dir, result_files(run_dir))})


def record_run(out: Path, command: str, config: Mapping[str, Any], metrics: Mapping[str, Any], *,
               tracker: Any = None, wall_time_s: float | None = None, **fields: Any) -> None:
    """The run folder's epilogue, in the one order every command follows: the tracker's summary,
    metrics.json, then run_card.json last (status complete, ``fields``, the metrics, the wall
    time, every result file's checksum). A run stopped anywhere before the card is written has
    no card, so it never looks complete."""
    from grun_cli.io_utils import atomic_write_json

    if tracker is not None:
        tracker.summary(metrics)
    atomic_write_json(Path(out) / "metrics.json", metrics)
    timing = {} if wall_time_s is None else {"wall_time_s": wall_time_s}
    write_run_card(out, run_card(command, config, status="complete", **fields, metrics=metrics, **timing))
