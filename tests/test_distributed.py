"""DDP via torchrun: 2 CPU processes (gloo) follow the loss trajectory of 1 process at the same global batch.

The two processes are asked for as a user does, with `train.processes: 2` on the same `seg-p2p train` command."""

import csv
import json
import os
import subprocess
import sys

import pytest
from conftest import ONE_THREAD, tiny_params, tiny_project

# conftest's tiny params, 16 training images (2 x 2 per step), 2 epochs. Instance norm and no dropout: with
# them, 2 x 2 images per step is the same computation as 1 x 4 (BatchNorm statistics per process would
# differ; that is what train.sync_batchnorm is for, on GPUs).
DDP = {
    "data": {"synthetic": {"num_train": 16}},
    "train": {"n_epochs": 2, "n_epochs_decay": 0, "sample_every": 2},
    "members": {"pix2pix": {"generator": {"norm": "instance", "dropout": 0.0},
                            "discriminator": {"norm": "instance"}}},
    "strategies": [],
}


def run(args, cwd):
    env = {**os.environ, **ONE_THREAD}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def history(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo is exercised on Linux")
def test_two_processes_match_one_at_the_same_global_batch(tmp_path):
    tiny_project(tmp_path, DDP)
    run([sys.executable, "-m", "seg_p2p", "prepare", "--out", "data"], tmp_path)
    train = [sys.executable, "-m", "seg_p2p", "train", "--member", "pix2pix", "--data", "data"]
    run([*train, "--out", "one"], tmp_path)
    tiny_params(tmp_path, DDP | {"train": DDP["train"] | {"processes": 2}}, name="two.yaml")
    run([sys.executable, "-m", "seg_p2p", "--params", "two.yaml", *train[3:], "--out", "two"], tmp_path)
    one, two = history(tmp_path / "one" / "history.csv"), history(tmp_path / "two" / "history.csv")
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        for key in ("loss_d", "loss_g_gan", "loss_g_l1", "val_miou"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=2e-3, abs=2e-3), key
    assert (tmp_path / "two" / "checkpoints" / "last.pt").exists()
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["placement"]["processes"] == 2
