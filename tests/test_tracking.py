"""The experiment record survives faults: RUNNING runs of dead processes closed, SIGINT handled however the process
was started (and the run reopened by the resume), two trainings writing one store at once, and a store locked past
its timeout costing a warning, never the training. One run across SIGKILLs and resumes: test_faults' random-kill
test."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from conftest import CLI, ONE_THREAD, metric_steps, read_history, tiny_params, tracked_runs, train_argv

ONE_EPOCH = {"train": {"n_epochs": 1, "n_epochs_decay": 0}}  # where the test is about the store, not the epochs


@pytest.fixture(scope="module")
def one_epoch(workspace) -> Path:
    return tiny_params(workspace, ONE_EPOCH, name="one_epoch.yaml")


def start(workspace: Path, params: Path, out: Path, store: Path, seed: int = 0, ignore_sigint: bool = False):
    """`seg-p2p train` in a child process, as DVC (or a shell job) starts it."""
    def ignore():  # what `cmd &`, nohup and some CI runners hand down
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    env = {**os.environ, **ONE_THREAD, "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    return subprocess.Popen([*CLI, *train_argv(workspace, out, "unet_l1", seed, params)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=ignore if ignore_sigint else None)


def wait_for_checkpoint(out: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not (out / "checkpoints" / "last.pt").exists():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)


def finish(workspace: Path, params: Path, out: Path, store: Path) -> None:
    rerun = start(workspace, params, out, store)
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read()


def test_a_running_run_of_a_dead_process_is_closed_when_the_training_starts(workspace, one_epoch, tmp_path,
                                                                             mlflow_store, monkeypatch):
    """A process killed before its first checkpoint leaves a RUNNING run nothing else would end."""
    from mlflow.tracking import MlflowClient

    from seg_p2p.cli import main
    from seg_p2p.tracking import Tracker

    monkeypatch.setenv("DVC_EXP_NAME", "stale-test")  # the parent run this training joins
    dead = subprocess.Popen(["true"])
    dead.wait()
    client = MlflowClient()
    experiment_id = client.get_experiment_by_name("seg_p2p").experiment_id
    parent = client.create_run(experiment_id, run_name="stale-test", tags={"seg_p2p.parent": "stale-test"})
    host = Tracker.__init__.__globals__["socket"].gethostname()

    def child(pid: int) -> str:
        return client.create_run(experiment_id, run_name="train/unet_l1", tags={
            "mlflow.parentRunId": parent.info.run_id, "stage": "train", "seg_p2p.host": host,
            "seg_p2p.pid": str(pid)}).info.run_id

    stale, alive = child(dead.pid), child(os.getpid())
    main(train_argv(workspace, tmp_path / "train", "unet_l1", params=one_epoch))
    status = {run.info.run_id: run.info.status for run in tracked_runs(mlflow_store)}
    assert status[stale] == "KILLED"
    assert status[alive] == "RUNNING"  # its process still runs: not ours to end
    assert sorted(status.values()) == ["FINISHED", "KILLED", "RUNNING"]


@pytest.mark.slow
def test_sigint_stops_a_training_started_with_sigint_ignored(workspace, tmp_path, mlflow_store):
    out, params = tmp_path / "train", workspace / "params.yaml"  # 3 epochs: the signal lands after the first
    child = start(workspace, params, out, mlflow_store, ignore_sigint=True)
    wait_for_checkpoint(out, child)
    child.send_signal(signal.SIGINT)
    assert child.wait(timeout=120) == 128 + signal.SIGINT, "SIGINT was ignored: the training ran on"
    assert "interrupted (SIGINT)" in child.stderr.read()
    assert [run.info.status for run in tracked_runs(mlflow_store)] == ["KILLED"]
    finish(workspace, params, out, mlflow_store)
    assert [run.info.status for run in tracked_runs(mlflow_store)] == ["FINISHED"]  # the same run, reopened


@pytest.mark.slow
def test_two_trainings_write_one_store_at_once(workspace, tmp_path, mlflow_store):
    """What `dvc queue start -j 2` does: both runs complete with every epoch's metrics."""
    children = [start(workspace, workspace / "params.yaml", tmp_path / f"seed{seed}", mlflow_store, seed=seed)
                for seed in (0, 1)]
    for child in children:
        assert child.wait(timeout=300) == 0, child.stderr.read()
    runs = tracked_runs(mlflow_store)
    assert [run.info.status for run in runs] == ["FINISHED", "FINISHED"]
    epochs = len(read_history(tmp_path / "seed0" / "history.csv"))
    for run in runs:
        assert [step for step, _ in metric_steps(mlflow_store, run.info.run_id, "val_miou")] == \
            list(range(1, epochs + 1))


@pytest.mark.slow
def test_a_store_locked_past_its_timeout_costs_a_warning_not_the_training(workspace, one_epoch, tmp_path,
                                                                         mlflow_store):
    lock = sqlite3.connect(mlflow_store, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # another writer holding the store for longer than sqlite's busy timeout
    try:
        child = start(workspace, one_epoch, tmp_path / "train", mlflow_store)
        assert child.wait(timeout=300) == 0
        stderr = child.stderr.read()
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    warnings = [line for line in stderr.replace("\r", "\n").splitlines() if "MLflow tracking failed" in line]
    assert len(warnings) == 1 and "database is locked" in warnings[0]
    assert (tmp_path / "train" / "summary.json").exists() and len(read_history(tmp_path / "train" / "history.csv"))
