"""The programs the pipeline calls, found in this Python environment whether it is activated or not."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from seg_p2p.errors import UserError

# DVC's cache holds each output once, hard-linked into the workspace (symbolic links where the cache is on another
# filesystem), never copied: hardlink first, as DVC then moves a new output into the cache by linking it (with
# reflink first it copies the files of a folder output and leaves them unlinked). Every write replaces a file
# (seg_p2p.atomic), so a linked one is never changed; DVC unprotects (copies) a persisted output before `dvc repro`
# reruns its stage. `.dvc/config` says the same.
CACHE_LINKS = "hardlink,symlink"


def stage_environment() -> dict[str, str]:
    """Stages call `seg-p2p`: put this environment's scripts first on PATH, activated or not."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def dvc_executable() -> str:
    found = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    if not Path(found).exists():
        raise UserError("dvc is not installed in this environment; run `make install` (or pip install dvc)")
    return found
