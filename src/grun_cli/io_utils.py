"""Atomic writes, so that an interrupted run never leaves a result that looks complete."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``path`` only if the block succeeds.

    An existing ``path`` is replaced; on failure the temporary directory is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_dir(tmp, path)


def publish_dir(built: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Rename the finished folder ``built`` to ``path`` (a sibling), replacing what is there."""
    built, path = Path(built), Path(path)
    old = None
    if path.exists():  # moved aside and deleted last: a stop while deleting it keeps the new folder
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
        os.replace(path, old / path.name)
    os.replace(built, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def build_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """One builder at a time for a cache entry that several processes may want at once
    (parallel sweep trials, test workers): the others wait here, then find it built. Without
    it each would build the entry and replace the others' while they read it."""
    from filelock import FileLock

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.parent / f".{path.name}.lock")):
        yield


def remove_if_empty(path: str | os.PathLike[str]) -> None:
    """Drop a folder a library created but left empty (the HF Trainer's output_dir)."""
    with contextlib.suppress(OSError):
        Path(path).rmdir()


def read_jsonl(path: str | os.PathLike[str], required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Read a JSON-Lines file (TOFU's ``.json`` files are JSON Lines too); every row an object
    with the ``required`` string fields, or one line naming the file, the line and the field."""
    from grun_cli.errors import GrunError

    rows = []
    try:
        f = open(path, encoding="utf-8")  # noqa: SIM115 - closed below, errors reported per line
    except OSError as e:
        raise GrunError(f"cannot read {path} ({e.strerror}); check the path and its permissions") from None
    with f:
        try:
            for line_no, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise GrunError(f"{path}:{line_no} is not valid JSON Lines ({e.msg}); "
                                    "re-copy the file from the data set's release") from None
                if required:
                    missing = [k for k in required if not isinstance(row, dict) or not isinstance(row.get(k), str)]
                    if missing:
                        raise GrunError(f"{path}:{line_no}: the row has no text field '{missing[0]}' (each row needs "
                                        f"{', '.join(repr(k) for k in required)}); fix or re-copy the file")
                rows.append(row)
        except UnicodeDecodeError:
            raise GrunError(f"{path} is not UTF-8 text; re-copy the file from the data set's release") from None
    return rows


def write_jsonl(path: str | os.PathLike[str], rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """The file's sha256, read in chunks (checkpoints of big models do not fit in memory twice)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
