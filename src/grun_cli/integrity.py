"""Checksums of what a run saved, and their check when a run or adapter folder is opened.

`grun_adapter.json` lists the sha256 of the adapter's weight files; `run_card.json` (written last)
lists every file of the run's result. Opening a folder checks them, so a truncated, corrupted or
missing file is refused in one line naming it, instead of a traceback from a loader (or, worse, a
model that loads and is silently wrong). Folders written before checksums existed have no list
and are opened as before.

Files bigger than ``GRUN_VERIFY_MAX_BYTES`` (default 2 GiB: a full 8B checkpoint's shards) are
checked by size only when opened; their sha256 is still recorded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from grun_cli.errors import GrunError
from grun_cli.io_utils import sha256_file

#: never part of a run's result: the card itself, markers, logs, Hydra's record, checkpoints, W&B
NOT_RESULTS = ("run_card.json", "FAILED", "INTERRUPTED")
NOT_RESULT_DIRS = (".hydra", "trainer", "wandb")


def digests(folder: Path, files: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """{path relative to ``folder``: {sha256, bytes}}."""
    return {str(f.relative_to(folder)): {"sha256": sha256_file(f), "bytes": f.stat().st_size} for f in sorted(files)}


def result_files(run: Path) -> list[Path]:
    """The files of a run folder that make up its result."""
    out = []
    for f in Path(run).rglob("*"):
        rel = f.relative_to(run)
        if not f.is_file() or rel.parts[0] in NOT_RESULT_DIRS or f.name in NOT_RESULTS or f.suffix == ".log" \
                or f.name.startswith("."):
            continue
        out.append(f)
    return out


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON file grun wrote, or one line saying it is damaged."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise GrunError(f"{path} is unreadable ({type(e).__name__}: truncated or corrupted); the {what} cannot be "
                        "used: copy the folder again or rerun it") from None
    if not isinstance(data, dict):
        raise GrunError(f"{path} is not a {what} (a JSON object was expected); copy the folder again or rerun it")
    return data


def verify(folder: Path, files: Mapping[str, Any] | None, listed_in: str, *, every_byte: bool = False,
           fix: str = "copy the folder again or rerun it") -> None:
    """Every listed file present, of its size and (up to the size limit, or always with
    ``every_byte``) its sha256; ``fix`` ends the one-line error."""
    if not files:
        return
    limit = float("inf") if every_byte else int(os.environ.get("GRUN_VERIFY_MAX_BYTES", 2 << 30))
    for name, want in files.items():
        path = Path(folder) / name
        if not path.is_file():
            raise GrunError(f"{path} is missing (listed in {listed_in}); {fix}")
        size = path.stat().st_size
        if size != want.get("bytes") or (size <= limit and sha256_file(path) != want.get("sha256")):
            raise GrunError(f"{path} does not match its checksum in {listed_in} (truncated or changed); {fix}")
