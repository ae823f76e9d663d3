"""This checkout as a clone of it would be, uncommitted changes included, in a git repository of its own: where
`benchmarks.startup` runs a study and the tests run DVC (a project that `dvc repro` and `dvc exp` can use)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def copy_checkout(folder: Path) -> Path:
    """Copy the tracked and the unignored files (.dvc/ with them, as a clone has it) into `folder`."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, folder / name)
    return folder


def commit_all(folder: Path, message: str) -> None:
    """Make `folder` a git repository with everything in it committed."""
    for command in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "-c", "user.name=seg-p2p", "-c", "user.email=seg-p2p@localhost", "commit", "-qm", message]):
        subprocess.run(command, cwd=folder, check=True, capture_output=True)
