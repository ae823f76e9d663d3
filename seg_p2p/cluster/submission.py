"""Jobs through an executor: one per planned job (a stage, or one strategy of an ensemble stage), each after the
jobs it needs, then the recording job; the submission (executor, job ids, logs, what each stage ran on) is written to
`<cluster.folder>/submission.json`, so a later `seg-p2p cluster status` or `cluster run` knows it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from seg_p2p.atomic import write_json
from seg_p2p.cluster import jobs
from seg_p2p.cluster.executors import Executor, JobStatus, executor_named
from seg_p2p.cluster.plan import StageJob
from seg_p2p.config import ClusterConfig, StageResources
from seg_p2p.errors import UserError

RECORD = "record"  # the last job's name: dvc commit of every stage
RECORD_RESOURCES = StageResources(cpus=1, mem_gb=4.0, time_min=60)


@dataclass
class SubmittedJob:
    name: str  # StageJob.name: the DVC stage, or stage/strategy for one strategy of an ensemble stage
    job_id: str
    needs: list[str]  # the names of the jobs it waited for
    inputs: str  # StageJob.inputs at submission
    stdout: str
    stderr: str


@dataclass
class Submission:
    executor: str  # its registered name
    root: str
    submitted: str
    experiment: str | None
    jobs: list[SubmittedJob] = field(default_factory=list)

    @staticmethod
    def path(root: Path, settings: ClusterConfig) -> Path:
        return root / settings.folder / "submission.json"

    @classmethod
    def load(cls, path: Path) -> Submission | None:
        import json

        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        for job in raw["jobs"]:  # written before jobs had names: each job was a whole stage
            if "stage" in job:
                job["name"] = job.pop("stage")
        return cls(**{**raw, "jobs": [SubmittedJob(**job) for job in raw["jobs"]]})

    def save(self, path: Path) -> None:
        write_json(path, asdict(self))

    @property
    def stages(self) -> list[SubmittedJob]:
        return [job for job in self.jobs if job.name != RECORD]

    def scheduler(self, settings: ClusterConfig) -> Executor:
        return executor_named(self.executor, settings, Path(self.root))

    def states(self, executor: Executor) -> dict[str, JobStatus]:
        """Each job's state by its name, one question to the executor for all of them."""
        found = executor.states([job.job_id for job in self.jobs])
        return {job.name: found[job.job_id] for job in self.jobs}


def submit(plan: list[StageJob], root: Path, settings: ClusterConfig, executor: Executor, env: dict[str, str],
           experiment: str | None) -> Submission:
    """Submit the plan (stages in dependency order, each after the jobs of the stages it needs), then the job that
    records them all; for a one-job executor, one job running `dvc repro`. A job the scheduler refuses cancels
    those already submitted, so nothing half-submitted waits."""
    submission = Submission(executor.name, str(root), time.strftime("%Y-%m-%dT%H:%M:%S"), experiment)
    ids: dict[str, str] = {}

    def add(name: str, resources: StageResources, gpus: int, needs: list[str], inputs: str, fn, *args) -> None:
        try:
            receipt = executor.submit(f"seg-p2p:{name}", resources, gpus, [ids[n] for n in needs], fn, *args)
        except Exception as exc:  # noqa: BLE001 - sbatch's refusal (unknown partition, bad option): one line
            executor.cancel(list(ids.values()))
            detail = " ".join(str(exc).split())[-300:]
            raise UserError(f"cluster: the scheduler refused the job of {name} ({detail})"
                            + (f"; the {len(ids)} jobs submitted before it are cancelled" if ids else "")
                            + "; fix cluster.resources or cluster.sbatch in params.yaml") from None
        ids[name] = receipt.job_id
        submission.jobs.append(SubmittedJob(name, receipt.job_id, needs, inputs, receipt.stdout, receipt.stderr))
        submission.save(Submission.path(root, settings))  # job by job: an interrupted submit still knows its jobs

    if executor.one_job:
        add("dvc repro", RECORD_RESOURCES, 0, [], "", jobs.run_repro, str(root), env)
        return submission
    for job in plan:
        add(job.name, job.resources, job.gpus, list(job.needs), job.inputs, jobs.run_stage, str(root), job, env)
    stages = list(dict.fromkeys(job.stage for job in plan))  # an ensemble stage's strategy jobs record it once
    add(RECORD, RECORD_RESOURCES, 0, [job.name for job in plan], "", jobs.record, str(root), stages, experiment)
    return submission
