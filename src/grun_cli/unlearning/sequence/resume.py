"""``grun unlearn resume=<sequence run>``: continue a stopped sequence where it stopped.

After each request the run folder's ``adapter/`` holds the model so far (GRUN: every edit with its
provenance; LoRA / full: the weights) with ``sequence_state.json`` inside, written in the same
atomic step — so the model and the number of requests it has seen never disagree — and
``sequence.jsonl`` holds that request's line (written first: a stop between the two redoes the
request). A resumed sequence loads that model as ``base_run=`` loads an earlier run, keeps the
finished requests' lines and goes on with the next request, from its newest checkpoint when the
stop came during its training (``train.save_steps``, and one at the step a stop signal ends).
Each request seeds its own training, so the resumed sequence equals the uninterrupted one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from grun_cli.errors import GrunError
from grun_cli.unlearning.sequence.requests import Request

SEQUENCE_FILE = "sequence.jsonl"  # one line per request done, with its metrics
STATE_FILE = "sequence_state.json"
REQUESTS_DIR = "requests"
ADAPTER_DIR = "adapter"


def request_folder(run: Path, number: int) -> Path:
    return Path(run) / REQUESTS_DIR / f"{number:02d}"


def is_sequence_run(run: Path) -> bool:
    """A sequence run's folder (it makes ``requests/`` as its first request starts)."""
    return (Path(run) / REQUESTS_DIR).is_dir()


def write_state(adapter_dir: Path, done: int) -> None:
    """Record, inside the adapter folder being written, how many requests its model has seen."""
    (Path(adapter_dir) / STATE_FILE).write_text(json.dumps({"requests_done": done}) + "\n")


def requests_done(run: Path) -> int:
    """Requests whose model the run folder holds (0: none saved yet)."""
    path = Path(run) / ADAPTER_DIR / STATE_FILE
    if not path.is_file():
        return 0
    try:
        done = json.loads(path.read_text())["requests_done"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise GrunError(f"{path} is unreadable ({type(e).__name__}); the run folder is damaged: start the sequence "
                        "again in a new folder") from None
    if not isinstance(done, int) or done < 1:
        raise GrunError(f"{path}: requests_done={done!r} is not a request count; start the sequence again")
    return done


def request_checkpoint(run: Path, number: int, verify: bool = True) -> Path | None:
    """The newest checkpoint of request ``number``'s training (files checked against their
    manifest), or None when it stopped before its first."""
    from grun_cli.train.manifest import latest, read_manifest

    checkpoint = latest(request_folder(run, number))
    if checkpoint is not None and verify:
        read_manifest(checkpoint)
    return checkpoint


def check_resumable(run: Path) -> str:
    """What a resumed sequence continues from, in words; a GrunError when nothing was saved."""
    done = requests_done(run)
    checkpoint = request_checkpoint(run, done + 1)
    if not done and checkpoint is None:
        raise GrunError(f"{run} stopped before its first request saved anything (no checkpoint: train.save_steps "
                        "sets how often one is written); start the sequence again")
    where = f", request {done + 1} from {checkpoint.name}" if checkpoint else ""
    return f"{done} finished request{'s' * (done != 1)}{where}"


def resumed(s: Any, run: Path, requests: list[Request]) -> tuple[list[dict[str, Any]], Any, Path | None]:
    """The stopped sequence's finished requests' lines, its model (None before the first request
    finished, or for full fine-tuning: loaded into the base model) and the checkpoint the next
    request continues from."""
    from grun_cli.unlearning.sequence.base_run import load_model_state

    done = requests_done(run)
    if done > len(requests):
        raise GrunError(f"{run} holds {done} finished requests but its settings plan {len(requests)}; the run folder "
                        "does not belong to these settings: start the sequence again")
    path = Path(run) / SEQUENCE_FILE
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
    lines = lines[:done]
    if len(lines) < done or [Request.from_record(x["request"]) for x in lines] != requests[:done]:
        raise GrunError(f"{path} does not list the {done} requests its model has seen, as planned; the run folder "
                        "is damaged: start the sequence again")
    adapter = load_model_state(s, Path(run) / ADAPTER_DIR, s.settings.adapter.kind) if done else None
    for later in range(done + 2, len(requests) + 1):  # nothing after the next request survives
        shutil.rmtree(request_folder(run, later), ignore_errors=True)
    return lines, adapter, request_checkpoint(run, done + 1, verify=False)  # (verified before loading)
