"""SIGINT and SIGTERM during a training: an exception that unwinds it, raised only where it cuts nothing in half.

The exception keeps the last checkpoint and lets the MLflow run be marked KILLED. An MLflow call is one SQL
transaction, though: raised in its middle, the exception leaves the sqlite store locked by this very process, and
the `end_run(KILLED)` that follows waits out the busy timeout and fails. So a signal that arrives inside
`deferred()` is held and raised when that block ends.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager

_held: list[int] | None = None  # inside deferred(): the signals that arrived there


class Interrupted(KeyboardInterrupt):
    """SIGINT and SIGTERM: stop, keep the last checkpoint, mark the MLflow run KILLED."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signum = signum  # the CLI exits 128 + signum


def _raise_interrupted(signum, frame):
    if _held is not None:
        _held.append(signum)
        return
    raise Interrupted(signum)


@contextmanager
def interrupts_raise():
    """Our own handler for SIGINT and SIGTERM, whatever the inherited disposition: a process started in
    the background inherits SIGINT ignored, and Ctrl-C, `kill` and such a process must behave alike."""
    previous = {signum: signal.signal(signum, _raise_interrupted) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def deferred():
    """Hold the signals that arrive inside until the block is done, then raise the first (nested: the outermost
    block raises). Outside `interrupts_raise` the default handlers apply and nothing is held."""
    global _held
    if _held is not None:
        yield
        return
    _held = []
    try:
        yield
    finally:
        arrived, _held = _held, None  # the handler raises directly from here on
        if arrived:
            raise Interrupted(arrived[0])
