"""The experiment record survives faults: one MLflow run per training across SIGKILL and resume, RUNNING runs of
dead processes closed, SIGINT handled however the process was started, two trainings writing one store at once,
and a store locked past its timeout costing a warning, never the training."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import CLI, ONE_THREAD, read_history, tiny_params, train_argv

# 6 epochs: a kill after the first checkpoint lands well before the end.
LONGER = {"train": {"n_epochs": 3, "n_epochs_decay": 3}}
EPOCHS = 6


@pytest.fixture(scope="module")
def longer(workspace) -> Path:
    return tiny_params(workspace, LONGER, name="longer.yaml")


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


def train_runs(store: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("seg_p2p")
    return client.search_runs([experiment.experiment_id], filter_string="tags.stage = 'train'")


def metric_steps(store: Path, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    history = MlflowClient(tracking_uri=f"sqlite:///{store}").get_metric_history(run_id, key)
    return sorted((metric.step, metric.value) for metric in history)


def finish(workspace: Path, params: Path, out: Path, store: Path) -> None:
    rerun = start(workspace, params, out, store)
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read()


@pytest.mark.slow
def test_sigkill_then_the_same_command_continues_the_same_run(workspace, longer, tmp_path, mlflow_template):
    reference_store, store = tmp_path / "reference.db", tmp_path / "killed.db"
    for path in (reference_store, store):
        path.write_bytes(mlflow_template.read_bytes())
    reference = start(workspace, longer, tmp_path / "reference", reference_store)  # one thread each: side by side

    out = tmp_path / "killed"
    child = start(workspace, longer, out, store)
    wait_for_checkpoint(out, child)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    killed_after = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epoch"]
    assert 1 <= killed_after < EPOCHS
    finish(workspace, longer, out, store)

    runs = train_runs(store)
    assert [run.info.status for run in runs] == ["FINISHED"]  # one run, no phantom RUNNING one
    (uninterrupted,) = train_runs(reference_store)
    for key in ("val_miou", "loss_l1", "lr"):
        steps = metric_steps(store, runs[0].info.run_id, key)
        assert [step for step, _ in steps] == list(range(1, EPOCHS + 1))  # every epoch once
        assert steps == metric_steps(reference_store, uninterrupted.info.run_id, key)  # as if never killed
    assert read_history(out / "history.csv") == read_history(tmp_path / "reference" / "history.csv")


def test_a_running_run_of_a_dead_process_is_closed_when_the_training_starts(workspace, tmp_path, mlflow_store,
                                                                             monkeypatch):
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
    main(train_argv(workspace, tmp_path / "train", "unet_l1"))
    status = {run.info.run_id: run.info.status for run in train_runs(mlflow_store)}
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
    assert [run.info.status for run in train_runs(mlflow_store)] == ["KILLED"]
    finish(workspace, params, out, mlflow_store)
    assert [run.info.status for run in train_runs(mlflow_store)] == ["FINISHED"]  # the same run, reopened


@pytest.mark.slow
def test_two_trainings_write_one_store_at_once(workspace, tmp_path, mlflow_store):
    """What `dvc queue start -j 2` does: both runs complete with every epoch's metrics."""
    children = [start(workspace, workspace / "params.yaml", tmp_path / f"seed{seed}", mlflow_store, seed=seed)
                for seed in (0, 1)]
    for child in children:
        assert child.wait(timeout=300) == 0, child.stderr.read()
    runs = train_runs(mlflow_store)
    assert [run.info.status for run in runs] == ["FINISHED", "FINISHED"]
    epochs = len(read_history(tmp_path / "seed0" / "history.csv"))
    for run in runs:
        assert [step for step, _ in metric_steps(mlflow_store, run.info.run_id, "val_miou")] == \
            list(range(1, epochs + 1))


@pytest.mark.slow
def test_a_store_locked_past_its_timeout_costs_a_warning_not_the_training(workspace, tmp_path, mlflow_store):
    lock = sqlite3.connect(mlflow_store, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # another writer holding the store for longer than sqlite's busy timeout
    try:
        child = start(workspace, workspace / "params.yaml", tmp_path / "train", mlflow_store)
        assert child.wait(timeout=300) == 0
        stderr = child.stderr.read()
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    warnings = [line for line in stderr.replace("\r", "\n").splitlines() if "MLflow tracking failed" in line]
    assert len(warnings) == 1 and "database is locked" in warnings[0]
    assert (tmp_path / "train" / "summary.json").exists() and len(read_history(tmp_path / "train" / "history.csv"))
