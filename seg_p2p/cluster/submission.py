"""Jobs through submitit: one per planned stage with `afterok` dependencies that follow the DAG, then the recording
job; the submission (job ids, logs, what each stage ran on) is written to `<cluster.folder>/submission.json`, so a
later `seg-p2p cluster status` or `cluster run` knows it.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from seg_p2p.atomic import process_gone, write_json
from seg_p2p.cluster import jobs
from seg_p2p.cluster.plan import StageJob
from seg_p2p.config import ClusterConfig, StageResources
from seg_p2p.errors import UserError

RECORD = "record"  # the last job's name: dvc commit of every stage
PENDING = {"PENDING", "REQUEUED", "CONFIGURING", "UNKNOWN", "READY", "RESIZING", "SUSPENDED"}
RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT"}
DONE = "COMPLETED"
RECORD_RESOURCES = StageResources(cpus=1, mem_gb=4.0, time_min=60)


@dataclass
class SubmittedJob:
    stage: str
    job_id: str
    needs: list[str]
    inputs: str  # StageJob.inputs at submission
    stdout: str
    stderr: str


@dataclass
class Submission:
    executor: str
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
        return cls(**{**raw, "jobs": [SubmittedJob(**job) for job in raw["jobs"]]})

    def save(self, path: Path) -> None:
        write_json(path, asdict(self))

    @property
    def stages(self) -> list[SubmittedJob]:
        return [job for job in self.jobs if job.stage != RECORD]

    def states(self) -> dict[str, str]:
        """Each job's scheduler state in SLURM's words (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, ...):
        one sacct call for all of them."""
        if self.executor == "local":
            return {job.stage: _local_state(job) for job in self.jobs}
        import submitit

        watcher = submitit.SlurmJob.watcher
        for job in self.jobs:
            watcher.register_job(job.job_id)
        watcher.update()
        return {job.stage: (watcher.get_state(job.job_id, mode="cache") or "UNKNOWN").split()[0]  # "CANCELLED by 0"
                for job in self.jobs}


def _local_state(job: SubmittedJob) -> str:
    """A local job (a process of this machine, its pid the job id) in SLURM's words."""
    from submitit.core.utils import JobPaths, pickle_load

    result = JobPaths(Path(job.stdout).parent, job_id=job.job_id).result_pickle
    if result.exists():
        return DONE if pickle_load(result)[0] == "success" else "FAILED"
    return "RUNNING" if not process_gone(int(job.job_id)) else "CANCELLED"


def pick_executor(settings: ClusterConfig) -> str:
    """slurm where sbatch is found (executor: auto), else local; `executor: slurm` without sbatch is refused."""
    found = shutil.which("sbatch") is not None
    if settings.executor == "slurm" and not found:
        raise UserError("cluster.executor: slurm, but sbatch is not found on PATH; run on a SLURM login node, or "
                        "start a single-node SLURM (.ci/local-slurm, README 'On a cluster'), or set executor: local")
    if settings.executor == "auto":
        return "slurm" if found else "local"
    return settings.executor


def _executor(kind: str, folder: Path, settings: ClusterConfig, name: str, resources: StageResources, gpus: int,
              after: list[str]):
    import submitit

    executor = submitit.AutoExecutor(folder=folder / "jobs" / "%j", cluster=kind)
    executor.update_parameters(name=name, timeout_min=resources.time_min, cpus_per_task=resources.cpus,
                               mem_gb=resources.mem_gb)
    if kind == "slurm":
        extra = dict(settings.sbatch)
        if after:  # the scheduler waits; a failed or cancelled parent cancels this job
            extra |= {"dependency": "afterok:" + ":".join(after), "kill-on-invalid-dep": "yes"}
        executor.update_parameters(slurm_partition=settings.partition, slurm_account=settings.account,
                                   slurm_gres=f"gpu:{gpus}" if gpus else None, slurm_setup=list(settings.setup),
                                   slurm_additional_parameters=extra)
    return executor


def submit(plan: list[StageJob], root: Path, settings: ClusterConfig, env: dict[str, str],
           experiment: str | None) -> Submission:
    """Submit the plan (stages in dependency order, each after the jobs of the stages it needs), then the job that
    records them all; with the local executor, one job running `dvc repro`."""
    kind = pick_executor(settings)
    folder = root / settings.folder
    submission = Submission(kind, str(root), time.strftime("%Y-%m-%dT%H:%M:%S"), experiment)
    ids: dict[str, str] = {}

    def add(name: str, resources: StageResources, gpus: int, needs: list[str], inputs: str, fn, *args) -> None:
        executor = _executor(kind, folder, settings, f"seg-p2p:{name}", resources, gpus, [ids[n] for n in needs])
        try:
            job = executor.submit(fn, *args)
        except Exception as exc:  # noqa: BLE001 - sbatch's refusal (unknown partition, too many CPUs): one line
            detail = " ".join(str(exc).split())[-300:]
            raise UserError(f"cluster: the scheduler refused the job of {name} ({detail}); fix cluster.resources "
                            f"or cluster.sbatch in params.yaml") from None
        ids[name] = job.job_id
        submission.jobs.append(SubmittedJob(name, job.job_id, needs, inputs, str(job.paths.stdout),
                                            str(job.paths.stderr)))
        submission.save(Submission.path(root, settings))  # job by job: an interrupted submit still knows its jobs

    if kind == "local":
        add("dvc repro", RECORD_RESOURCES, 0, [], "", jobs.run_repro, str(root), env)
        return submission
    for job in plan:
        add(job.stage, job.resources, job.gpus, list(job.needs), job.inputs, jobs.run_stage, str(root), job, env)
    add(RECORD, RECORD_RESOURCES, 0, [job.stage for job in plan], "", jobs.record, str(root),
        [job.stage for job in plan], experiment)
    return submission
