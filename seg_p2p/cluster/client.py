"""`seg-p2p cluster run | status`: plan from DVC, submit through submitit, follow the jobs, record the results.

A new submission first records what the previous one finished (a stage whose job completed on inputs that are
still the same), so submitting again after a failure or a cancelled job runs only what is not done; a training
cut mid-run resumes from its checkpoint inside its new job.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from seg_p2p.cluster.plan import current_inputs, describe, read_plan
from seg_p2p.cluster.submission import DONE, PENDING, RECORD, RUNNING, Submission, pick_executor, submit
from seg_p2p.config import Config
from seg_p2p.errors import UserError
from seg_p2p.plan.show import announce
from seg_p2p.environment import dvc_executable, stage_environment
from seg_p2p.tracking import PARENT_RUN_ENV, create_parent_run, experiment_key


class JobsFailed(UserError):
    """A job failed or was cancelled: not bad input, so exit 1 (still one line)."""

    exit_code = 1


def say(message: str) -> None:
    print(f"seg-p2p cluster: {message}", file=sys.stderr, flush=True)


def cluster_run(cfg: Config, root: Path, wait: bool = True, experiment: str | None = None,
                tracking_root: Path | None = None) -> None:
    """Submit every out-of-date stage of the pipeline in `root`; `experiment`: the DVC experiment the jobs make
    (an experiment's own workspace); `tracking_root`: where the default MLflow store lives (the repo's)."""
    kind = pick_executor(cfg.cluster)
    path = Submission.path(root, cfg.cluster)
    previous = Submission.load(path)
    if previous is not None:
        states = previous.states()
        active = [stage for stage, state in states.items() if state in PENDING | RUNNING]
        if active:
            raise UserError(f"{path}: the last submission is still running ({len(active)} jobs, e.g. {active[0]}); "
                            "follow it with `seg-p2p cluster status`, or cancel its jobs (scancel) to submit anew")
        collect(previous, states, root)
    plan = read_plan(root, cfg)
    if not plan:
        say("every stage is up to date: nothing to submit")
        return
    announce(cfg, root, root / "ensembles")
    say(f"{len(plan)} stages out of date, {kind} executor{' (dvc repro in one job)' if kind == 'local' else ''}:\n"
        + describe(plan))
    env = job_environment(cfg, root, experiment, tracking_root or root)
    submission = submit(plan, root, cfg.cluster, env, experiment)
    say(f"submitted {len(submission.jobs)} jobs (logs in {root / cfg.cluster.folder / 'jobs'}); "
        f"`seg-p2p cluster status` shows them")
    if wait:
        watch(submission, cfg.cluster.poll_seconds)


def job_environment(cfg: Config, root: Path, experiment: str | None, tracking_root: Path) -> dict[str, str]:
    """What every job adds to the environment SLURM gives it: this environment's scripts first on PATH, one
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


def collect(previous: Submission, states: dict[str, str], root: Path) -> None:
    """Record in dvc.lock the stages the previous submission finished but did not record (its recording job never
    ran): upstream first, each only if its job completed, the stages it waited for are recorded, and its inputs
    are those it ran on."""
    if previous.executor == "local" or states.get(RECORD) == DONE:
        return
    finished = [job for job in previous.stages if states.get(job.stage) == DONE]
    if not finished:
        return
    now = current_inputs(root, [job.stage for job in previous.stages])
    recorded: list[str] = []
    for job in finished:
        if now.get(job.stage) == job.inputs and all(need in recorded for need in job.needs):
            recorded.append(job.stage)
    if recorded:
        subprocess.run([dvc_executable(), "commit", "--force", "--quiet", *recorded], cwd=root, check=True)
        say(f"recorded {len(recorded)} stages the last submission finished: {', '.join(recorded)}")


def tally(states: dict[str, str]) -> dict[str, int]:
    counts = {"pending": 0, "running": 0, "done": 0, "failed": 0}
    for state in states.values():
        counts["pending" if state in PENDING else "running" if state in RUNNING else
               "done" if state == DONE else "failed"] += 1
    return counts


def watch(submission: Submission, poll_seconds: float) -> None:
    """Follow the jobs until none is pending or running, a line each time the counts change; a failed or
    cancelled job is named with its log as soon as it is seen. Raises JobsFailed naming the first failure."""
    started, shown, named = time.perf_counter(), None, set()
    while True:
        states = submission.states()
        counts = tally(states)
        if counts != shown:
            shown = counts
            say(" · ".join(f"{n} {what}" for what, n in counts.items()) +
                f" of {len(states)} jobs ({time.perf_counter() - started:.0f} s)")
        for job in submission.jobs:
            state = states[job.stage]
            if state not in PENDING | RUNNING | {DONE} and job.stage not in named and not failed_upstream(job, states):
                named.add(job.stage)
                say(f"{job.stage} (job {job.job_id}) {state}; log: {job.stderr}")
        if counts["pending"] + counts["running"] == 0:
            break
        time.sleep(poll_seconds)
    failures = [job for job in submission.jobs if states[job.stage] != DONE and not failed_upstream(job, states)]
    if failures:
        first = failures[0]
        skipped = sum(states[job.stage] != DONE for job in submission.jobs) - len(failures)
        raise JobsFailed(f"{first.stage} (job {first.job_id}) {states[first.stage]}, log {first.stderr}"
                         + (f"; {len(failures) - 1} more failed" if len(failures) > 1 else "")
                         + (f"; {skipped} jobs that depend on them did not run" if skipped else "")
                         + "; fix it and run `seg-p2p cluster run` again: finished stages are kept")
    say(f"done in {time.perf_counter() - started:.0f} s: every stage is recorded in dvc.lock "
        "(`dvc metrics show`, `dvc exp show`)")


def failed_upstream(job, states: dict[str, str]) -> bool:
    """Whether a job did not run because a job it waits for did not complete (SLURM cancelled it)."""
    return any(states.get(need) != DONE for need in job.needs)


def cluster_status(cfg: Config, root: Path, wait: bool = False) -> None:
    """The last submission of the repo and of each experiment's workspace: a row per job; `wait`: follow them."""
    folder = root / cfg.cluster.folder
    places = [root] + sorted(path for path in (folder / "workspaces").glob("*") if path.is_dir())
    submissions = [found for place in places if (found := Submission.load(Submission.path(place, cfg.cluster)))]
    if not submissions:
        raise UserError(f"{Submission.path(root, cfg.cluster)}: no submission here; submit one with "
                        "`seg-p2p cluster run`")
    for submission in submissions:
        states = submission.states()
        rows = [("stage", "job", "state", "log")] + [(job.stage, job.job_id, states[job.stage], job.stderr)
                                                      for job in submission.jobs]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        print(f"{submission.root}: submitted {submission.submitted} ({submission.executor}"
              + (f", experiment {submission.experiment}" if submission.experiment else "") + ")")
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])
    if wait:
        for submission in submissions:
            watch(submission, cfg.cluster.poll_seconds)
