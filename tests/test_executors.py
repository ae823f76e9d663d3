"""The cluster client's logic against a fake executor registered from this module (as test_extending registers a
member kind): a failed job stops the client and the jobs after it, a resubmission submits only what is left, a job
that can never start stops the client at the first poll, and one that waits its turn is waited for. No SLURM here;
the SLURM executor's words (states, pending reasons, what a partition offers) are checked as plain functions.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from conftest import run_in, tiny_project

from seg_p2p.cluster.client import JobsFailed, cluster_run
from seg_p2p.cluster.executors import EXECUTORS, Executor, JobState, JobStatus, Receipt, register_executor
from seg_p2p.cluster.executors.slurm import status_of
from seg_p2p.cluster.executors.slurm_nodes import Node, limit_minutes, refusal
from seg_p2p.cluster.plan import StageJob
from seg_p2p.config import StageResources, load_config
from seg_p2p.errors import UserError

PENDING, DONE, FAILED, CANCELLED = JobState.PENDING, JobState.DONE, JobState.FAILED, JobState.CANCELLED
# prepare -> train -> report, prepare -> evaluate -> report; train fails while the file `broken` exists (its cmd a
# list, as the reference stage's: a job runs its commands in order and stops at the first that fails, as DVC does).
PIPELINE = {"stages": {
    "prepare": {"cmd": "echo data > a.txt", "outs": ["a.txt"]},
    "train": {"cmd": ["test ! -e broken", "cat a.txt > b.txt"], "deps": ["a.txt"], "outs": ["b.txt"]},
    "evaluate": {"cmd": "cat a.txt > e.txt", "deps": ["a.txt"], "outs": ["e.txt"]},
    "report": {"cmd": "cat b.txt e.txt > r.txt", "deps": ["b.txt", "e.txt"], "outs": ["r.txt"]}}}


class FakeScheduler(Executor):
    """A scheduler inside the test: at each poll it runs, in this process, every job whose parents completed
    (afterok), cancels every job whose parent failed or was cancelled (kill-on-invalid-dep), and keeps a job named in
    `held` pending as long as its count of polls says (-1: for ever)."""

    jobs: dict[str, dict] = {}
    held: dict[str, tuple[JobStatus, int]] = {}
    refused: set[str] = set()  # job names whose submission the scheduler refuses
    submitted: list[str] = []
    cancelled: list[str] = []
    polls = 0

    @classmethod
    def reset(cls) -> None:
        cls.jobs, cls.held, cls.refused, cls.submitted, cls.cancelled, cls.polls = {}, {}, set(), [], [], 0

    def submit(self, job_name, resources, gpus, after, fn, *args) -> Receipt:
        if job_name.removeprefix("seg-p2p:") in self.refused:
            raise RuntimeError("sbatch: error: Batch job submission failed: Invalid feature specification")
        job_id = str(100 + len(self.jobs))
        self.jobs[job_id] = {"name": job_name.removeprefix("seg-p2p:"), "after": after, "call": (fn, args),
                             "status": JobStatus(PENDING, "Dependency" if after else "")}
        self.submitted.append(self.jobs[job_id]["name"])
        log = str(self.folder / "jobs" / job_id / "log.err")
        return Receipt(job_id, log, log)

    def states(self, job_ids: list[str]) -> dict[str, JobStatus]:
        FakeScheduler.polls += 1
        for job in self.jobs.values():  # submitted in dependency order: parents are decided first
            if job["status"].state is PENDING:
                job["status"] = self._decide(job)
        return {job_id: self.jobs[job_id]["status"] for job_id in job_ids}

    def _decide(self, job: dict) -> JobStatus:
        parents = [self.jobs[parent]["status"].state for parent in job["after"]]
        if any(state in (FAILED, CANCELLED) for state in parents):
            return JobStatus(CANCELLED, "DependencyNeverSatisfied")
        if not all(state is DONE for state in parents):
            return job["status"]
        status, polls = self.held.get(job["name"], (None, 0))
        if polls:
            self.held[job["name"]] = (status, polls - 1)
            return status
        fn, args = job["call"]
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - the stage's own failure (jobs.StageFailed), as a node would report it
            return JobStatus(FAILED)
        return JobStatus(DONE)

    def cancel(self, job_ids: list[str]) -> None:
        self.cancelled.extend(job_ids)
        for job_id in job_ids:
            self.jobs[job_id]["status"] = JobStatus(CANCELLED)


@pytest.fixture
def fake():
    register_executor("fake", FakeScheduler)
    FakeScheduler.reset()
    yield FakeScheduler
    del EXECUTORS["fake"]


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A DVC project of four small stages whose cluster executor is the fake; the jobs run in it."""
    tiny_project(tmp_path, {"cluster": {"executor": "fake", "poll_seconds": 0.01}})
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(PIPELINE))
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        run_in(command, tmp_path)
    monkeypatch.chdir(tmp_path)  # a stage's job runs in the project, as on a node
    return tmp_path


def run(root: Path) -> None:
    cluster_run(load_config(root / "params.yaml", strategies_dir=root / "ensembles"), root)


def test_a_failed_job_stops_the_client_and_its_dependents_and_a_resubmission_runs_only_what_is_left(
        project, fake, capsys):
    (project / "broken").touch()
    with pytest.raises(JobsFailed) as failed:
        run(project)
    message = str(failed.value)
    assert failed.value.exit_code == 1 and "\n" not in message
    assert message.startswith("train (job ") and " failed, log " in message, message
    assert "2 jobs that depend on them did not run" in message  # report and the recording job
    by_name = {job["name"]: job["status"].state for job in fake.jobs.values()}
    assert by_name == {"prepare": DONE, "train": FAILED, "evaluate": DONE, "report": CANCELLED,
                       "record": CANCELLED}
    assert (project / "e.txt").exists() and not (project / "b.txt").exists() and not (project / "r.txt").exists()

    (project / "broken").unlink()
    fake.submitted.clear()
    run(project)
    assert fake.submitted == ["train", "report", "record"]  # prepare and evaluate were done: recorded, not rerun
    err = capsys.readouterr().err
    assert "recorded 2 stages the last submission finished: prepare, evaluate" in err and "done in" in err
    assert (project / "r.txt").read_text() == "data\ndata\n"
    run(project)
    assert "every stage is up to date: nothing to submit" in capsys.readouterr().err


def test_a_job_that_can_never_start_stops_the_client_at_the_first_poll_and_is_cancelled(project, fake):
    fake.held["train"] = (JobStatus(PENDING, "PartitionTimeLimit", never_starts=True), -1)
    with pytest.raises(JobsFailed) as stuck:
        run(project)
    message = str(stuck.value)
    assert "\n" not in message and message.startswith("train (job ") and "can never start" in message
    assert "PartitionTimeLimit" in message and "cluster.resources.train" in message, message
    assert fake.polls == 1
    unfinished = {job_id for job_id, job in fake.jobs.items() if job["name"] in ("train", "report", "record")}
    assert set(fake.cancelled) == unfinished  # nothing is left waiting; prepare and evaluate had finished
    assert all(job["status"].state in (DONE, CANCELLED) for job in fake.jobs.values())


def test_a_job_the_scheduler_refuses_cancels_those_submitted_before_it(project, fake):
    fake.refused.add("report")
    with pytest.raises(UserError) as refused:
        run(project)
    message = str(refused.value)
    assert refused.value.exit_code == 2 and "\n" not in message
    assert message.startswith("cluster: the scheduler refused the job of report (sbatch: error: Batch job submission "
                              "failed: Invalid feature specification); the 3 jobs submitted before it are cancelled")
    assert sorted(fake.cancelled) == sorted(fake.jobs) and fake.polls == 0  # prepare, train, evaluate; no waiting


def test_a_job_waiting_its_turn_is_shown_with_its_reason_and_waited_for(project, fake, capsys):
    fake.held["train"] = (JobStatus(PENDING, "Resources"), 2)
    run(project)
    err = capsys.readouterr().err
    assert re.search(r"3 pending \(Dependency: 2, Resources: 1\) · 0 running · 2 done · 0 failed of 5 jobs", err), err
    assert "done in" in err and (project / "r.txt").exists() and fake.polls >= 3


def test_an_unknown_executor_is_refused_in_one_line(tmp_path):
    tiny_project(tmp_path, {"cluster": {"executor": "kubernetes"}})
    with pytest.raises(UserError) as refused:
        run(tmp_path)
    assert str(refused.value).startswith("cluster.executor: 'kubernetes' is not an executor (known: auto, ")
    assert not (tmp_path / ".cluster").exists()


@pytest.mark.parametrize("state, reason, expected", [
    ("PENDING", "Resources", JobStatus(PENDING, "Resources")),
    ("PENDING", "ReqNodeNotAvail, UnavailableNodes:node1", JobStatus(PENDING, "ReqNodeNotAvail")),
    ("PENDING", "AssocMaxJobsLimit", JobStatus(PENDING, "AssocMaxJobsLimit")),
    ("PENDING", "PartitionConfig", JobStatus(PENDING, "PartitionConfig", never_starts=True)),
    ("PENDING", "BadConstraints", JobStatus(PENDING, "BadConstraints", never_starts=True)),
    ("PENDING", "QOSMaxWallDurationPerJobLimit", JobStatus(PENDING, "QOSMaxWallDurationPerJobLimit", True)),
    ("PENDING", "None", JobStatus(PENDING)),
    ("RUNNING", "None", JobStatus(JobState.RUNNING)),
    ("COMPLETED", "", JobStatus(DONE)),
    ("CANCELLED by 0", "", JobStatus(CANCELLED)),
    ("TIMEOUT", "", JobStatus(FAILED, "TIMEOUT")),
    ("FAILED", "NonZeroExitCode", JobStatus(FAILED)),
])
def test_slurm_states_and_reasons_in_the_projects_words(state, reason, expected):
    assert status_of(state, reason) == expected


@pytest.mark.parametrize("limit, minutes", [("infinite", None), ("UNLIMITED", None), ("30", 30), ("30:00", 30),
                                            ("2:00:00", 120), ("1-00:00:00", 1440), ("1-12", 2160)])
def test_slurm_time_limits_in_minutes(limit, minutes):
    assert limit_minutes(limit) == minutes


def stage(kind: str, processes: int = 1, **resources) -> StageJob:
    return StageJob(f"{kind}@x-0", kind, "true", (), StageResources(**resources), processes, "")


@pytest.mark.parametrize("job, fragment", [
    (stage("prepare", cpus=4), "cluster.resources.prepare.cpus: prepare@x-0 asks for 4 CPUs, but no node of "
                               "partition debug has more than 2 (sinfo); set it to at most 2"),
    (stage("train", cpus=1, mem_gb=32), "cluster.resources.train.mem_gb: train@x-0 asks for 32 GB, but no node"),
    (stage("train", cpus=1, gpus=1, mem_gb=1, time_min=90), "cluster.resources.train.time_min: train@x-0 asks for "
                                                             "90 min, but partition debug allows at most 60"),
    (stage("train", 4, cpus=1, gpus=1, mem_gb=1, time_min=30), "train.processes: train@x-0 asks for 4 GPUs"),
    (stage("train", cpus=2, gpus=1, mem_gb=1, time_min=30), "no node of partition debug has all of them"),
])
def test_a_request_no_node_can_meet_is_named_with_the_key_to_change(job, fragment):
    nodes = [Node(cpus=2, mem_gb=21.2, gpus=0, partition_minutes=60), Node(cpus=1, mem_gb=4, gpus=2,
                                                                          partition_minutes=60)]
    assert fragment in refusal(job, "debug", nodes)
    assert refusal(stage("train", cpus=1, gpus=1, mem_gb=2, time_min=60), "debug", nodes) is None
