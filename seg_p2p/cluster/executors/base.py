"""The executor protocol: what `cluster run` asks of a scheduler, in the project's words.

An executor submits a stage's job after the jobs it waits for, says each job's state (pending with the scheduler's
own reason, running, done, failed, cancelled), cancels jobs and says where their logs go. The client, the
submission record and the jobs know executors only through this; SLURM and the local executor implement it, and a
new one is a module with a subclass and `register_executor("name", Class)` (as member and combiner kinds are).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable

from seg_p2p.cluster.plan import StageJob
from seg_p2p.config import ClusterConfig, StageResources


class JobState(Enum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = {JobState.PENDING, JobState.RUNNING}  # a job still to finish


@dataclass(frozen=True)
class JobStatus:
    state: JobState
    reason: str = ""  # the scheduler's word: why a job waits (Resources, PartitionConfig) or how it ended (TIMEOUT)
    never_starts: bool = False  # pending for a reason that does not clear by itself: it would wait forever

    def __str__(self) -> str:
        return f"{self.state.value} ({self.reason})" if self.reason else self.state.value


@dataclass(frozen=True)
class Receipt:
    """What the scheduler gives back for a submitted job: its id and where its output goes."""

    job_id: str
    stdout: str
    stderr: str


class Executor(ABC):
    """One scheduler. `one_job` executors have no dependencies between jobs: one job runs `dvc repro`, which
    waits along the DAG and records every stage itself; the others get a job per stage, each after its parents
    (`after`), and a failed or cancelled parent must cancel the jobs that wait for it."""

    one_job = False

    def __init__(self, name: str, settings: ClusterConfig, folder: Path):
        self.name = name  # as registered: submission.json records it
        self.settings = settings
        self.folder = folder  # <cluster.folder>: the job scripts and logs go in folder/jobs

    @classmethod
    def unavailable(cls) -> str | None:
        """Why it cannot run here, and what to do (None: it can)."""
        return None

    def check(self, plan: list[StageJob]) -> None:
        """Refuse (UserError, one line) a stage whose request no node could ever meet, before anything is
        submitted; by default every request is taken."""

    @abstractmethod
    def submit(self, job_name: str, resources: StageResources, gpus: int, after: list[str], fn: Callable,
               *args) -> Receipt:
        """Submit `fn(*args)` as job `job_name`, to start once the jobs `after` have completed."""

    @abstractmethod
    def states(self, job_ids: list[str]) -> dict[str, JobStatus]:
        """The state of each job, asking the scheduler once for all of them."""

    @abstractmethod
    def cancel(self, job_ids: list[str]) -> None:
        """Cancel the jobs (those already finished are left as they are)."""


EXECUTORS: dict[str, type[Executor]] = {}


def register_executor(name: str, executor: type[Executor]) -> None:
    """Make `cluster.executor: NAME` usable in params.yaml."""
    if name in EXECUTORS:
        raise ValueError(f"executor '{name}' is already registered")
    EXECUTORS[name] = executor


def submitit_job(cluster: str, folder: Path, name: str, resources: StageResources, fn: Callable, args: tuple,
                 **parameters):
    """`fn(*args)` submitted through submitit's executor for `cluster`, its files in folder/jobs/<job id>;
    returns submitit's Job and its Receipt."""
    import submitit

    executor = submitit.AutoExecutor(folder=folder / "jobs" / "%j", cluster=cluster)
    executor.update_parameters(name=name, timeout_min=resources.time_min, cpus_per_task=resources.cpus,
                               mem_gb=resources.mem_gb, **parameters)
    job = executor.submit(fn, *args)
    return job, Receipt(job.job_id, str(job.paths.stdout), str(job.paths.stderr))
