"""Whether a process of this machine is still there: a temp file, an MLflow run or a local job left by a process
that is gone was killed, and can be cleaned up or called cancelled."""

from __future__ import annotations

import os


def process_gone(pid: int) -> bool:
    """Whether no process `pid` runs on this machine (never for our own)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, ValueError):
        return pid <= 0
    return False
