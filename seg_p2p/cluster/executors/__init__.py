"""Executors: how `cluster run` hands jobs to a scheduler (the protocol: `base.Executor`).

Each implementation is one module that registers itself with `register_executor`, as member and combiner kinds do;
`cluster.executor` in params.yaml names one, or is `auto`: slurm where sbatch is found, else local.
"""

from pathlib import Path

from seg_p2p.cluster.executors.base import (ACTIVE, EXECUTORS, Executor, JobState, JobStatus,  # noqa: F401
                                            Receipt, register_executor)
from seg_p2p.cluster.executors import local, slurm  # noqa: E402,F401 - importing an executor module registers it
from seg_p2p.config import ClusterConfig
from seg_p2p.errors import UserError

AUTO = ("slurm", "local")  # what `executor: auto` takes: the first that can run here


def pick_executor(settings: ClusterConfig) -> str:
    """The executor `cluster.executor` names, refused in one line where it is unknown or cannot run here."""
    if settings.executor == "auto":
        return next(name for name in AUTO if EXECUTORS[name].unavailable() is None)
    if settings.executor not in EXECUTORS:
        raise UserError(f"cluster.executor: '{settings.executor}' is not an executor (known: auto, "
                        f"{', '.join(EXECUTORS)}); set one of them in params.yaml")
    why = EXECUTORS[settings.executor].unavailable()
    if why:
        raise UserError(f"cluster.executor: {settings.executor}, but {why}")
    return settings.executor


def executor_named(name: str, settings: ClusterConfig, root: Path) -> Executor:
    """Executor `name` for the project (or experiment workspace) in `root`: its jobs' files in <cluster.folder>."""
    if name not in EXECUTORS:
        raise UserError(f"{root / settings.folder / 'submission.json'}: its executor '{name}' is not registered "
                        f"(known: {', '.join(EXECUTORS)})")
    return EXECUTORS[name](name, settings, root / settings.folder)
