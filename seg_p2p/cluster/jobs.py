"""What runs inside a scheduler job: one stage as `dvc repro` would run it, or the final recording in dvc.lock.

An executor calls these functions on a node, in the job's allocation (SLURM and local pickle them through
submitit): the GPUs the scheduler gave the job are its CUDA_VISIBLE_DEVICES, and its CPUs are the stage's threads.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
from pathlib import Path

from seg_p2p.cluster.plan import StageJob
from seg_p2p.environment import dvc_executable

STOP_GRACE_S = 60  # how long a stopped stage may take to finish its epoch bookkeeping after SIGTERM


class StageFailed(RuntimeError):
    """A stage's command exited non-zero: the job fails and the scheduler cancels what depends on it."""


def run_stage(root: str, job: StageJob, env: dict[str, str]) -> None:
    """Run one stage's own command in `root` (or one strategy of an ensemble stage), after removing its outputs
    (persisted ones are made private copies instead), exactly as `dvc repro` does before it runs a stage."""
    from dvc.repo import Repo

    os.chdir(root)
    with Repo(root) as repo:  # Stage.remove_outs, without the repository lock that concurrent jobs would fight for
        stage = next(s for s in repo.index.stages if s.addressing == job.stage)
        for out in stage.outs:
            if job.strategy:  # one strategy of the stage: its own folder, which no other job of the stage touches
                folder = Path(out.fs_path) / job.strategy
                if folder.exists() and out.use_cache:
                    out.cache.unprotect(str(folder))
            else:
                out.unprotect() if out.persist else out.remove(ignore_remove=False)
    threads = str(max(1, job.resources.cpus // job.processes))  # its own CPUs: never a thread per core of the node
    child_env = {**os.environ, **env, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    print(f"seg-p2p cluster: {job.name} on {socket.gethostname()}, SLURM job {os.environ.get('SLURM_JOB_ID', '-')}, "
          f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '-')}, {threads} threads: {job.cmd}",
          flush=True)
    _run(job.cmd, child_env, job.name)


def run_repro(root: str, env: dict[str, str]) -> None:
    """executor: local: the whole pipeline with `dvc repro` in one job (no scheduler: DVC runs it in series)."""
    os.chdir(root)
    _run(f"{dvc_executable()} repro", {**os.environ, **env}, "dvc repro")


def record(root: str, stages: list[str], experiment: str | None) -> None:
    """Record the stages the jobs ran in dvc.lock (and their outputs in the DVC cache), upstream first; in an
    experiment's workspace, save it as a DVC experiment of the repo, its uncached metrics and plots included (the
    repo's .gitignore keeps runs/ out of git). The only step that takes DVC's lock."""
    from dvc.repo import Repo

    os.chdir(root)
    dvc = dvc_executable()
    _run(f"{dvc} commit --force --quiet {' '.join(stages)}", dict(os.environ), "dvc commit")
    if experiment:
        with Repo(root) as repo:
            shown = [str(out.def_path) for stage in repo.index.stages for out in stage.outs
                     if not out.use_cache and (out.metric or out.plot)]
        include = " ".join(f"--include-untracked {path}" for path in shown)
        # Workspaces are worktrees of one repository and share its refs, DVC's scratch refs (refs/exps/exec)
        # included: two experiments saved at the same moment would write the same ones. One at a time.
        common = subprocess.run(["git", "rev-parse", "--git-common-dir"], capture_output=True, text=True,
                                check=True).stdout.strip()
        with open(Path(common) / "seg-p2p-exp-save.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _run(f"{dvc} exp save --force --name {experiment} {include}", dict(os.environ), "dvc exp save")


def _run(cmd: str, env: dict[str, str], what: str) -> None:
    """The command through the shell, as DVC runs a stage's cmd. Anything that stops this job (scancel, the time
    limit, submitit's timeout signal) stops the command with SIGTERM first, so a training marks its MLflow run
    KILLED and keeps its last complete epoch for the job that resumes it."""
    process = subprocess.Popen(cmd, shell=True, env=env, start_new_session=True)
    try:
        code = process.wait()
    except BaseException:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        raise
    if code:
        raise StageFailed(f"{what}: `{cmd}` exited with {code}")
