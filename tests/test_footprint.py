"""Disk that grows with the work: DVC's cache links outputs, linked files are never written into (a training or a
trained strategy killed and resumed in linked outputs leaves the cache as it was, with the uninterrupted run's
results), a complete training keeps its weights once and no optimizer state, strategies store no probabilities."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CLI, ONE_THREAD, read_history, run_in, study_repo

pytestmark = pytest.mark.slow

STUDY = {"seeds": [0], "train": {"n_epochs": 2, "n_epochs_decay": 2, "val_every": 1, "sample_every": 4},
         "strategies": ["max", "joint"]}


def cache_is_intact(root: Path) -> int:
    """Every file of DVC's cache still holds the bytes its name is the MD5 of; returns how many there are."""
    files = [path for path in (root / ".dvc" / "cache" / "files" / "md5").rglob("*") if path.is_file()]
    for path in files:
        expected = path.parent.name + path.name.removesuffix(".dir")
        assert hashlib.md5(path.read_bytes()).hexdigest() == expected, f"{path} was written into"
    return len(files)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The tiny study after `dvc repro`, and a copy of what it wrote (the uninterrupted runs)."""
    root = study_repo(tmp_path_factory.mktemp("footprint"), STUDY)
    run_in(["dvc", "repro"], root, timeout=1800)
    reference = tmp_path_factory.mktemp("reference")
    shutil.copytree(root / "runs", reference / "runs")
    return root, reference / "runs"


def test_outputs_are_linked_from_the_cache_not_copied(study):
    root, _ = study
    best = root / "runs" / "seed0" / "members" / "unet_ce" / "train" / "checkpoints" / "best.pt"
    assert best.is_symlink() or best.stat().st_nlink > 1
    assert cache_is_intact(root) > 0


def test_a_complete_training_keeps_its_weights_once_and_no_optimizer_state(study):
    root, _ = study
    for train, epochs in ((root / "runs" / "seed0" / "members" / "pix2pix" / "train", 2 + 2),
                          (root / "runs" / "seed0" / "ensembles" / "joint" / "train", 1 + 1)):  # joint.yaml's own
        last = torch.load(train / "checkpoints" / "last.pt", weights_only=True)
        assert last["complete"] and last["epoch"] == epochs and len(last["history"]) == epochs
        assert not {"model", "optimizers", "schedulers", "scaler"} & set(last)
        assert "model" in torch.load(train / "checkpoints" / "best.pt", weights_only=True)


def test_only_members_store_probabilities(study):
    root, _ = study
    seed = root / "runs" / "seed0"
    assert {p.name for p in (seed / "members" / "unet_ce" / "predict").iterdir()} == {
        f"{split}_{part}.{ext}" for split in ("val", "test") for part in ("pred", "probs") for ext in ("npy", "json")}
    # the strategies' val predictions: what the report picks the best ensemble by; the reference's: its best on val
    for predict in (seed / "ensembles" / "max" / "predict", seed / "ensembles" / "joint" / "predict",
                    seed / "reference" / "predict"):
        assert {p.name for p in predict.iterdir()} == {f"{split}_pred.{ext}" for split in ("val", "test")
                                                       for ext in ("npy", "json")}
    inside = seed / "ensembles" / "joint" / "members" / "unet_ce" / "predict"
    assert {p.name for p in inside.iterdir()} == {"test_pred.npy", "test_pred.json"}


def kill_then_resume(argv: list[str], root: Path, last: Path) -> str:
    """Run `argv` in `root`, SIGKILL it at a random moment after its first checkpoint, run it again to the end."""
    import subprocess

    env = {**os.environ, **ONE_THREAD}
    first = subprocess.Popen([*CLI, *argv], cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 600
    while not last.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(random.Random(7).uniform(0.0, 1.0))
    first.send_signal(signal.SIGKILL)
    first.wait(60)
    again = subprocess.run([*CLI, *argv], cwd=root, capture_output=True, text=True, timeout=900, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    return again.stderr


def test_trainings_killed_and_resumed_in_linked_outputs_leave_the_cache_unchanged(study):
    """As a cluster job does (outside `dvc repro`, which would unprotect them first): a member retrained over its
    linked outputs and a joint run started over, each killed after its first checkpoint and resumed, end with the
    uninterrupted run's results; every file of the cache keeps its bytes."""
    root, reference = study
    before = cache_is_intact(root)
    member = root / "runs" / "seed0" / "members" / "unet_l1" / "train"
    (member / "checkpoints" / "last.pt").unlink()  # start over: the new checkpoints replace the linked ones
    stderr = kill_then_resume(["train", "--member", "unet_l1", "--seed", "0", "--data", "data/prepared", "--out",
                               str(member.relative_to(root))], root, member / "checkpoints" / "last.pt")
    assert "resuming from" in stderr
    assert read_history(member / "history.csv") == read_history(
        reference / "seed0" / "members" / "unet_l1" / "train" / "history.csv")

    joint = root / "runs" / "seed0" / "ensembles" / "joint"
    (joint / "train" / "checkpoints" / "last.pt").unlink()
    stderr = kill_then_resume(["ensemble", "--seed", "0", "--strategy", "joint", "--data", "data/prepared", "--runs",
                               "runs/seed0/members", "--out", "runs/seed0/ensembles"], root,
                              joint / "train" / "checkpoints" / "last.pt")
    assert "resuming from" in stderr
    reference_joint = reference / "seed0" / "ensembles" / "joint"
    assert read_history(joint / "train" / "history.csv") == read_history(reference_joint / "train" / "history.csv")
    assert np.array_equal(np.load(joint / "predict" / "test_pred.npy"),
                          np.load(reference_joint / "predict" / "test_pred.npy"))
    assert cache_is_intact(root) == before
