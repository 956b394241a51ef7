"""A checkpoint's manifest and where checkpoints live in a run folder: what `resume=` reads to
check a stopped run before anything loads, so it imports nothing heavy (no transformers: the
check stays well under a second). Writing them: train/checkpoints.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grun_cli.errors import GrunError

MANIFEST = "grun_checkpoint.json"
TRAINER_DIR = "trainer"  # the HF Trainer's output_dir inside a run folder
PREFIX = "checkpoint-"


def _step(folder: Path) -> int:
    try:
        return int(folder.name[len(PREFIX):])
    except ValueError:
        return -1


def latest(run: Path) -> Path | None:
    """The run's checkpoint with the highest step that has a manifest (not yet verified)."""
    folders = [f for f in (Path(run) / TRAINER_DIR).glob(f"{PREFIX}*") if (f / MANIFEST).is_file()]
    return max(folders, key=_step) if folders else None


def read_manifest(folder: Path, verify: bool = True) -> dict[str, Any]:
    """The manifest of a checkpoint, every file checked against its sha256 (``verify``); one line
    naming the file when something is missing, truncated or changed."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        files = dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise GrunError(f"{path} is unreadable or incomplete ({type(e).__name__}); the checkpoint cannot be "
                        "trusted: delete that checkpoint folder to resume from an earlier one") from None
    if verify:  # every byte, whatever the size: resuming from a damaged state would go on silently
        from grun_cli.integrity import verify as verify_files

        verify_files(folder, files, MANIFEST, every_byte=True,
                     fix=f"delete {folder} to resume from an earlier checkpoint, or start the run again")
    return manifest
