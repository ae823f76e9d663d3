"""`seg-p2p cluster run | status`: plan from DVC, submit through an executor, follow the jobs, record the results.

A new submission first records what the previous one finished (a stage whose job completed on inputs that are
still the same), so submitting again after a failure or a cancelled job runs only what is not done; a training
cut mid-run resumes from its checkpoint inside its new job. Before anything is submitted, the executor refuses a
request no node could meet; while waiting, a job the scheduler holds for a reason that cannot clear stops the client.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from seg_p2p.cluster.executors import ACTIVE, Executor, JobState, JobStatus, executor_named, pick_executor
from seg_p2p.cluster.plan import current_inputs, describe, dvc_stage, read_plan, stage_kind
from seg_p2p.cluster.submission import RECORD, Submission, SubmittedJob, submit
from seg_p2p.config import Config
from seg_p2p.errors import UserError
from seg_p2p.plan.show import announce
from seg_p2p.environment import dvc_executable, stage_environment
from seg_p2p.tracking import PARENT_RUN_ENV, create_parent_run, experiment_key

SHOWN = {JobState.PENDING: "pending", JobState.RUNNING: "running", JobState.DONE: "done",
         JobState.FAILED: "failed", JobState.CANCELLED: "failed"}  # the status line's counts


class JobsFailed(UserError):
    """A job failed, was cancelled or can never start: not bad input, so exit 1 (still one line)."""

    exit_code = 1


def say(message: str) -> None:
    print(f"seg-p2p cluster: {message}", file=sys.stderr, flush=True)


def cluster_run(cfg: Config, root: Path, wait: bool = True, experiment: str | None = None,
                tracking_root: Path | None = None) -> None:
    """Submit every out-of-date stage of the pipeline in `root`; `experiment`: the DVC experiment the jobs make
    (an experiment's own workspace); `tracking_root`: where the default MLflow store lives (the repo's)."""
    executor = executor_named(pick_executor(cfg.cluster), cfg.cluster, root)
    path = Submission.path(root, cfg.cluster)
    previous = Submission.load(path)
    if previous is not None:
        scheduler = previous.scheduler(cfg.cluster)
        states = previous.states(scheduler)
        active = [stage for stage, status in states.items() if status.state in ACTIVE]
        if active:
            raise UserError(f"{path}: the last submission is still running ({len(active)} jobs, e.g. {active[0]}); "
                            "follow it with `seg-p2p cluster status`, or cancel its jobs (scancel on SLURM) to "
                            "submit anew")
        if not scheduler.one_job:  # `dvc repro` recorded what it finished
            collect(previous, states, root)
    plan = read_plan(root, cfg)
    if not plan:
        say("every stage is up to date: nothing to submit")
        return
    executor.check(plan)
    announce(cfg, root, root / "ensembles")
    say(f"{len(plan)} stages out of date, {executor.name} executor"
        f"{' (dvc repro in one job)' if executor.one_job else ''}:\n" + describe(plan))
    env = job_environment(cfg, root, experiment, tracking_root or root)
    submission = submit(plan, root, cfg.cluster, executor, env, experiment)
    say(f"submitted {len(submission.jobs)} jobs (logs in {root / cfg.cluster.folder / 'jobs'}); "
        f"`seg-p2p cluster status` shows them")
    if wait:
        watch(submission, executor, cfg.cluster.poll_seconds)


def job_environment(cfg: Config, root: Path, experiment: str | None, tracking_root: Path) -> dict[str, str]:
    """What every job adds to the environment the scheduler gives it: this environment's scripts first on PATH, one
    tracking store for all jobs, and the experiment's parent run, created here once."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{tracking_root.resolve()}/mlflow.db"
    env = {"PATH": stage_environment()["PATH"], "MLFLOW_TRACKING_URI": uri}
    if experiment:
        env["DVC_EXP_NAME"] = experiment
    previous_uri = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        parent = create_parent_run(cfg, experiment or experiment_key(cfg))
    finally:
        if previous_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI")
    if parent:
        env[PARENT_RUN_ENV] = parent
    return env


def collect(previous: Submission, states: dict[str, JobStatus], root: Path) -> None:
    """Record in dvc.lock the stages the previous submission finished but did not record (its recording job never
    ran): upstream first, each only if all its jobs completed, the stages they waited for are recorded, and its
    inputs are those it ran on. A stage with some strategies done is left to the next submission, where those
    strategies find their outputs finished and keep them (seg_p2p.ensemble.run)."""
    if RECORD in states and states[RECORD].state is JobState.DONE:
        return
    jobs_of: dict[str, list[SubmittedJob]] = {}
    for job in previous.stages:
        jobs_of.setdefault(dvc_stage(job.name), []).append(job)
    finished = [stage for stage, jobs in jobs_of.items()
                if all(states[job.name].state is JobState.DONE for job in jobs)]
    if not finished:
        return
    now = current_inputs(root, list(jobs_of))
    recorded: list[str] = []
    for stage in finished:
        jobs = jobs_of[stage]
        if all(now.get(stage) == job.inputs and all(dvc_stage(need) in recorded for need in job.needs)
               for job in jobs):
            recorded.append(stage)
    if recorded:
        subprocess.run([dvc_executable(), "commit", "--force", "--quiet", *recorded], cwd=root, check=True)
        say(f"recorded {len(recorded)} stages the last submission finished: {', '.join(recorded)}")


def status_line(states: dict[str, JobStatus]) -> str:
    """`3 pending (Resources: 2, Dependency: 1) · 1 running · 0 done · 0 failed`: why jobs wait, in the
    scheduler's words."""
    counts = Counter(SHOWN[status.state] for status in states.values())
    reasons = Counter(status.reason for status in states.values()
                      if status.state is JobState.PENDING and status.reason)
    why = f" ({', '.join(f'{reason}: {n}' for reason, n in reasons.most_common())})" if reasons else ""
    return " · ".join(f"{counts[shown]} {shown}{why if shown == 'pending' else ''}"
                      for shown in ("pending", "running", "done", "failed"))


def watch(submission: Submission, executor: Executor, poll_seconds: float) -> None:
    """Follow the jobs until none is pending or running, a line each time the counts (or why jobs wait) change; a
    failed or cancelled job is named with its log as soon as it is seen, and a job that can never start stops the
    client at the poll that sees it. Raises JobsFailed naming the first failure."""
    started, shown, named = time.perf_counter(), None, set()
    while True:
        states = submission.states(executor)
        line = status_line(states)
        if line != shown:
            shown = line
            say(f"{line} of {len(states)} jobs ({time.perf_counter() - started:.0f} s)")
        for job in submission.jobs:
            status = states[job.name]
            if status.state in (JobState.FAILED, JobState.CANCELLED) and job.name not in named \
                    and not failed_upstream(job, states):
                named.add(job.name)
                say(f"{job.name} (job {job.job_id}) {status}; log: {job.stderr}")
        stop_if_stuck(submission, executor, states)
        if not any(status.state in ACTIVE for status in states.values()):
            break
        time.sleep(poll_seconds)
    failures = [job for job in submission.jobs
                if states[job.name].state is not JobState.DONE and not failed_upstream(job, states)]
    if failures:
        first = failures[0]
        skipped = sum(states[job.name].state is not JobState.DONE for job in submission.jobs) - len(failures)
        raise JobsFailed(f"{first.name} (job {first.job_id}) {states[first.name]}, log {first.stderr}"
                         + (f"; {len(failures) - 1} more failed" if len(failures) > 1 else "")
                         + (f"; {skipped} jobs that depend on them did not run" if skipped else "")
                         + "; fix it and run `seg-p2p cluster run` again: finished stages are kept")
    say(f"done in {time.perf_counter() - started:.0f} s: every stage is recorded in dvc.lock "
        "(`dvc metrics show`, `dvc exp show`)")


def stop_if_stuck(submission: Submission, executor: Executor, states: dict[str, JobStatus]) -> None:
    """A job held for a reason that does not clear by itself would wait forever, and every job after it: cancel
    the submission's unfinished jobs (finished stages are kept for the next `cluster run`) and stop."""
    stuck = [job for job in submission.jobs if states[job.name].never_starts and not failed_upstream(job, states)]
    if not stuck:
        return
    unfinished = [job.job_id for job in submission.jobs if states[job.name].state in ACTIVE]
    executor.cancel(unfinished)
    first, kind = stuck[0], stage_kind(stuck[0].name)
    raise JobsFailed(f"{first.name} (job {first.job_id}) can never start: the scheduler holds it for "
                     f"{states[first.name].reason}, which does not clear by itself"
                     + (f" ({len(stuck) - 1} more likewise)" if len(stuck) > 1 else "")
                     + f"; its submission's {len(unfinished)} unfinished jobs are cancelled; change "
                     f"cluster.resources.{kind} (or cluster.partition, cluster.account, cluster.sbatch) in "
                     "params.yaml and run `seg-p2p cluster run` again: finished stages are kept")


def failed_upstream(job, states: dict[str, JobStatus]) -> bool:
    """Whether a job cannot run because a job it waits for failed or was cancelled (the scheduler cancels it)."""
    return any(states[need].state in (JobState.FAILED, JobState.CANCELLED) for need in job.needs)


def cluster_status(cfg: Config, root: Path, wait: bool = False) -> None:
    """The last submission of the repo and of each experiment's workspace: a row per job; `wait`: follow them."""
    folder = root / cfg.cluster.folder
    places = [root] + sorted(path for path in (folder / "workspaces").glob("*") if path.is_dir())
    submissions = [found for place in places if (found := Submission.load(Submission.path(place, cfg.cluster)))]
    if not submissions:
        raise UserError(f"{Submission.path(root, cfg.cluster)}: no submission here; submit one with "
                        "`seg-p2p cluster run`")
    schedulers = [submission.scheduler(cfg.cluster) for submission in submissions]
    for submission, scheduler in zip(submissions, schedulers):
        states = submission.states(scheduler)
        rows = [("job", "id", "state", "log")] + [(job.name, job.job_id, str(states[job.name]), job.stderr)
                                                      for job in submission.jobs]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        print(f"{submission.root}: submitted {submission.submitted} ({submission.executor}"
              + (f", experiment {submission.experiment}" if submission.experiment else "") + ")")
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])
    if wait:
        for submission, scheduler in zip(submissions, schedulers):
            watch(submission, scheduler, cfg.cluster.poll_seconds)
