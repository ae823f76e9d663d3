"""The CUDA path, on a GPU (skipped without one): every member and `joint` under fp32 / bf16 / fp16 (with the grad
scaler), channels_last and compile; a CUDA checkpoint resumes on CUDA exactly (the GPU's RNG restored: dropout masks
continue instead of replaying epoch 1) and loads on the CPU; `deterministic: true` repeats itself; a one-process
torchrun with NCCL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import CLI, ONE_THREAD, engine_losses, read_history, tiny_params, train_argv

from seg_p2p.models import MEMBER_KINDS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")

MODELS = [*MEMBER_KINDS, "joint", "joint-no-d"]
SETTINGS = [(p, c) for p in ("fp32", "bf16", "fp16") for c in (False, True)]
# Half precision on the GPU: the first step's supervised loss within 3% of fp32's (bf16: 8 mantissa bits; fp16: 11,
# its gradients scaled).
HALF_TOLERANCE = 0.03
CUDA = {"train": {"device": "cuda"}}
# A training long enough (many tiny epochs) to be stopped by SIGTERM after its first checkpoint; dropout on, so a
# resume that replayed the first epoch's dropout masks would differ from the uninterrupted run.
LONG = {"train": {"device": "cuda", "n_epochs": 30, "n_epochs_decay": 10, "val_every": 1, "sample_every": 40}}


@pytest.mark.parametrize("precision, channels_last", SETTINGS, ids=[f"{p}-{'cl' if c else 'nchw'}" for p, c in SETTINGS])
@pytest.mark.parametrize("name", MODELS)
def test_each_precision_and_memory_format_trains_every_model_on_cuda(name, precision, channels_last):
    losses = engine_losses(name, precision, channels_last, device="cuda")
    assert losses[-1] < losses[0], losses
    if precision != "fp32":
        assert losses[0] == pytest.approx(engine_losses(name, "fp32", channels_last, device="cuda")[0],
                                          rel=HALF_TOLERANCE)


@pytest.mark.parametrize("name", [*MEMBER_KINDS, "joint"])
def test_compile_on_cuda_matches_eager(name):
    losses = engine_losses(name, "bf16", True, True, device="cuda")
    assert losses[-1] < losses[0], losses
    assert losses[0] == pytest.approx(engine_losses(name, "bf16", True, device="cuda")[0], rel=1e-2)


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env={**os.environ, **ONE_THREAD}, capture_output=True, text=True, timeout=900,
                          **kwargs)


def test_a_cuda_training_stopped_and_resumed_equals_one_that_never_stopped_and_loads_on_the_cpu(workspace, tmp_path):
    params = tiny_params(tmp_path, LONG, name="cuda.yaml")
    whole = tmp_path / "whole"
    assert run([*CLI, *train_argv(workspace, whole, member="pix2pix", params=params)]).returncode == 0
    cut = tmp_path / "cut"
    argv = [*CLI, *train_argv(workspace, cut, member="pix2pix", params=params)]
    first = subprocess.Popen(argv, env={**os.environ, **ONE_THREAD}, stderr=subprocess.PIPE, text=True)
    last = cut / "checkpoints" / "last.pt"
    while not last.exists() and first.poll() is None:
        time.sleep(0.01)
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=300)
    stopped_at = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
    assert 1 <= stopped_at < 40
    resumed = run(argv)
    assert resumed.returncode == 0 and f"after epoch {stopped_at}" in resumed.stderr
    assert read_history(cut / "history.csv") == read_history(whole / "history.csv")
    state = torch.load(cut / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert state["cuda_rng"] is not None
    cpu = tiny_params(tmp_path, {"train": {"device": "cpu"}}, name="cpu.yaml")
    predicted = run([*CLI, "--params", str(cpu), "predict", "--member", "pix2pix", "--data", str(workspace / "data"),
                     "--checkpoint", str(cut / "checkpoints" / "best.pt"), "--out", str(tmp_path / "predict"),
                     "--split", "test"])
    assert predicted.returncode == 0, predicted.stderr[-2000:]


def test_deterministic_cuda_training_repeats_itself(workspace, tmp_path):
    params = tiny_params(tmp_path, {"train": {"device": "cuda", "deterministic": True}})
    for out in ("a", "b"):
        assert run([*CLI, *train_argv(workspace, tmp_path / out, member="unet_ce", params=params)]).returncode == 0
    assert read_history(tmp_path / "a" / "history.csv") == read_history(tmp_path / "b" / "history.csv")


def test_a_one_process_torchrun_trains_through_nccl(workspace, tmp_path):
    params = tiny_params(tmp_path, CUDA)
    result = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                  "-m", "seg_p2p", *train_argv(workspace, tmp_path / "out", params=params)])
    assert result.returncode == 0, result.stderr[-3000:]
    placement = json.loads((tmp_path / "out" / "summary.json").read_text())["placement"]
    assert placement["processes"] == 1 and placement["backend"] == "nccl"
