"""SIGTERM handled like Ctrl-C, and both ended in one line with the conventional exit status.

Job schedulers (Slurm, Kubernetes, `timeout`) stop a job with SIGTERM, which by default kills
Python with no cleanup: no marker, a folder that looks like a run in progress. Raising a
KeyboardInterrupt subclass instead runs every `except KeyboardInterrupt` cleanup already in
place (a sweep trial marks itself interrupted), and `grun` exits 128 + the signal number.
"""

from __future__ import annotations

import signal
from types import FrameType

INTERRUPTED = "INTERRUPTED"


class Interrupted(KeyboardInterrupt):
    """A stop signal, carried up the stack like Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


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
