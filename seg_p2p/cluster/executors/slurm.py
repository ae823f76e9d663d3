"""executor: slurm: a job per stage through submitit, each with `afterok` dependencies on the jobs it waits for,
so the scheduler waits along the DAG and cancels what depends on a job that failed. States come from `squeue`
(which says why a job is pending) and, for jobs it no longer lists, `sacct`: submitit's `Job.state` knows
neither the reason nor a fresh state between its own polls. Before anything is submitted, each stage's request is
checked against the partition's nodes (`sinfo`, `nodes`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Callable

from seg_p2p.cluster.executors.base import Executor, JobState, JobStatus, Receipt, register_executor, submitit_job
from seg_p2p.cluster.executors.slurm_nodes import partition_nodes, refusal, slurm_rows
from seg_p2p.cluster.plan import StageJob
from seg_p2p.config import StageResources
from seg_p2p.errors import UserError

RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}
ENDED = {"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED", "SPECIAL_EXIT",
         "REVOKED"}  # ended without completing; every other state not above is a job still waiting
# Pending reasons that do not clear by themselves: the request exceeds what the partition, the account or the QOS
# allows per job, or names something that does not exist. Resources, Priority, Dependency, ReqNodeNotAvail,
# AssocMaxJobsLimit and the like clear when other jobs end or nodes come back.
NEVER_CLEAR = {"PartitionConfig", "PartitionTimeLimit", "PartitionNodeLimit", "BadConstraints", "InvalidAccount",
               "InvalidQOS", "QOSTimeLimit", "AssociationTimeLimit", "DependencyNeverSatisfied"}
PER_JOB_LIMIT = re.compile(r"PerJob|^QOSMin")  # QOSMaxWallDurationPerJobLimit, AssocMaxCpuPerJobLimit, QOSMinGRES


class SlurmExecutor(Executor):
    @classmethod
    def unavailable(cls) -> str | None:
        if shutil.which("sbatch") is None:
            return ("sbatch is not found on PATH; run on a SLURM login node, or start a single-node SLURM "
                    "(.ci/local-slurm, README 'On a cluster'), or set executor: local")
        return None

    def check(self, plan: list[StageJob]) -> None:
        partition, nodes = partition_nodes(self.settings.partition)
        for job in plan:
            if nodes and (refused := refusal(job, partition, nodes)):
                raise UserError(refused)

    def submit(self, job_name: str, resources: StageResources, gpus: int, after: list[str], fn: Callable,
               *args) -> Receipt:
        extra = dict(self.settings.sbatch)
        if after:  # the scheduler waits; a failed or cancelled parent cancels this job
            extra |= {"dependency": "afterok:" + ":".join(after), "kill-on-invalid-dep": "yes"}
        _, receipt = submitit_job("slurm", self.folder, job_name, resources, fn, args,
                                  slurm_partition=self.settings.partition, slurm_account=self.settings.account,
                                  slurm_gres=f"gpu:{gpus}" if gpus else None, slurm_setup=list(self.settings.setup),
                                  slurm_additional_parameters=extra)
        return receipt

    def states(self, job_ids: list[str]) -> dict[str, JobStatus]:
        if not job_ids:
            return {}
        found = {job_id: status_of(state, reason) for job_id, state, reason in
                 slurm_rows(["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", "%i|%T|%r"])}
        gone = [job_id for job_id in job_ids if job_id not in found]  # ended before squeue's memory (MinJobAge)
        if gone:
            found |= {job_id: status_of(state, "") for job_id, state in
                      slurm_rows(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(gone)])}
        return {job_id: found.get(job_id, JobStatus(JobState.PENDING, "unknown")) for job_id in job_ids}

    def cancel(self, job_ids: list[str]) -> None:
        if job_ids:
            subprocess.run(["scancel", *job_ids], capture_output=True)  # a job already ended is no error here


def status_of(state: str, reason: str) -> JobStatus:
    """A SLURM state (`CANCELLED by 0` in sacct) and pending reason (`ReqNodeNotAvail, UnavailableNodes:n1`) in
    the project's words."""
    word, reason = state.split(" ")[0], reason.split(",")[0].strip()
    if word == "COMPLETED":
        return JobStatus(JobState.DONE)
    if word == "CANCELLED":
        return JobStatus(JobState.CANCELLED)
    if word in RUNNING:
        return JobStatus(JobState.RUNNING)
    if word in ENDED:
        return JobStatus(JobState.FAILED, "" if word == "FAILED" else word)
    why = reason if reason not in ("", "None") else ("" if word == "PENDING" else word)
    return JobStatus(JobState.PENDING, why, why in NEVER_CLEAR or bool(PER_JOB_LIMIT.search(why)))


register_executor("slurm", SlurmExecutor)
