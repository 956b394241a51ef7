"""SIGTERM handled like Ctrl-C, and both ended in one line with the conventional exit status.

Job schedulers (Slurm, Kubernetes, `timeout`) stop a job with SIGTERM, which by default kills
Python with no cleanup: no marker, a folder that looks like a run in progress. Raising a
KeyboardInterrupt subclass instead runs every `except KeyboardInterrupt` cleanup already in
place (a sweep trial marks itself interrupted), and `grun` exits 128 + the signal number.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType

INTERRUPTED = "INTERRUPTED"


class Interrupted(KeyboardInterrupt):
    """A stop signal, carried up the stack like Ctrl-C."""

    def __init__(self, signum: int, step: int | None = None, checkpoint: str | None = None,
                 then: str | None = None) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.step = step  # the training step reached, when a checkpoint was saved there
        self.checkpoint = checkpoint
        self.then = then  # what continues the work, where not `resume=` of the run folder


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def install() -> None:
    """SIGTERM raises Interrupted in the main thread, and SIGINT KeyboardInterrupt even where the
    shell started grun with SIGINT ignored (a background job of a script)."""
    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def describe(e: BaseException) -> tuple[str, int]:
    """(signal name, exit status) of an interruption: SIGINT 130, SIGTERM 143."""
    signum = getattr(e, "signum", signal.SIGINT)
    return signal.Signals(signum).name, 128 + int(signum)


@dataclass
class StopRequest:
    """The stop signal received while training, if any (set by `finish_step_first`)."""

    signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def finish_step_first(checkpoint: bool = True) -> Iterator[StopRequest]:
    """Inside the block the first SIGINT / SIGTERM only records itself: training finishes the
    current step, saves a checkpoint and stops (the trainer polls the request); a second signal
    stops at once. Outside the main thread (where handlers cannot be set) signals act as usual."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def record(signum: int, frame: FrameType | None) -> None:
        if request.signum is not None:
            raise Interrupted(signum)
        request.signum = signum
        saving = "and saving a checkpoint " if checkpoint else "(no checkpoint under sharding) "
        print(f"\ngrun: {signal.Signals(signum).name} received: finishing the current step {saving}"
              "(signal again to stop at once)", file=sys.stderr, flush=True)

    previous = {s: signal.signal(s, record) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
