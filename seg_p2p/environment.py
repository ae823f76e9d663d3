"""The programs the pipeline calls, found in this Python environment whether it is activated or not."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from seg_p2p.errors import UserError


def stage_environment() -> dict[str, str]:
    """Stages call `seg-p2p`: put this environment's scripts first on PATH, activated or not."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def dvc_executable() -> str:
    found = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    if not Path(found).exists():
        raise UserError("dvc is not installed in this environment; run `make install` (or pip install dvc)")
    return found
