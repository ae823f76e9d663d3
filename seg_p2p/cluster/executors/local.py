"""executor: local: no scheduler on this machine, so one job (a process of submitit's local executor, its pid the
job id) runs `dvc repro`, which waits along the DAG itself. Its state comes from submitit's own Job: the process
while the submitting client holds it, else the job's result file or whether the pid still runs."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Callable

from seg_p2p.cluster.executors.base import Executor, JobState, JobStatus, Receipt, register_executor, submitit_job
from seg_p2p.config import ClusterConfig, StageResources
from seg_p2p.processes import process_gone


class LocalExecutor(Executor):
    one_job = True

    def __init__(self, name: str, settings: ClusterConfig, folder: Path):
        super().__init__(name, settings, folder)
        self.launched = {}  # job id -> submitit's LocalJob, holding its process, for the client that submitted

    def submit(self, job_name: str, resources: StageResources, gpus: int, after: list[str], fn: Callable,
               *args) -> Receipt:
        job, receipt = submitit_job("local", self.folder, job_name, resources, fn, args)
        self.launched[job.job_id] = job
        return receipt

    def _job(self, job_id: str):
        import submitit

        return self.launched.get(job_id) or submitit.LocalJob(self.folder / "jobs" / job_id, job_id)

    def states(self, job_ids: list[str]) -> dict[str, JobStatus]:
        return {job_id: self._state(self._job(job_id)) for job_id in job_ids}

    @staticmethod
    def _state(job) -> JobStatus:
        state = job.state  # RUNNING | INTERRUPTED | FINISHED | NO PROCESS AND NO RESULT (another client's job)
        if state == "FINISHED" or job.paths.result_pickle.exists():
            return JobStatus(JobState.DONE if job.exception() is None else JobState.FAILED)
        if state == "RUNNING" or (state != "INTERRUPTED" and not process_gone(int(job.job_id))):
            return JobStatus(JobState.RUNNING)
        return JobStatus(JobState.CANCELLED)

    def cancel(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            if job_id in self.launched:
                self.launched[job_id].cancel()
            elif not process_gone(int(job_id)):
                os.kill(int(job_id), signal.SIGINT)


register_executor("local", LocalExecutor)
