"""Every precision, memory format and compile setting trains every registered member kind and `joint` (with and
without the discriminator) on the CPU, through the engine's own step, placing and precision; a checkpoint made under
bf16 + compile resumes under them and serves `predict` and `segment` under fp32. Parametrised over the member
registry, as the contract tests are: a new kind gets these tests by registering. fp16 (its gradient scaler needs
CUDA) is refused on the CPU; the CUDA module (test_cuda.py) runs it where a GPU is.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import torch
from conftest import CLI, ONE_THREAD, TINY_ENCODER, engine_losses, read_history, tiny_params, train_argv

from seg_p2p.models import MEMBER_KINDS

MODELS = [*MEMBER_KINDS, "joint", "joint-no-d"]
SETTINGS = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]  # precision, channels_last
# bf16 keeps 8 bits of mantissa: measured here, the first step's supervised loss under bf16 autocast is within 1.2%
# of fp32's for every model (the largest, unet_ce's cross-entropy); 3% leaves room for other CPUs' kernels.
BF16_TOLERANCE = 0.03
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("precision, channels_last", SETTINGS, ids=[f"{p}-{'cl' if c else 'nchw'}" for p, c in SETTINGS])
@pytest.mark.parametrize("name", MODELS)
def test_each_setting_trains_every_model(name, precision, channels_last):
    losses = engine_losses(name, precision, channels_last)
    assert losses[-1] < losses[0], losses
    if precision == "bf16":
        reference = engine_losses(name, "fp32", channels_last)[0]
        assert losses[0] == pytest.approx(reference, rel=BF16_TOLERANCE)


# A compiled joint ensemble of the two colour members: what compiling a joint run adds (the fusion net, the routing of
# the fusion gradient, the discriminator step) without recompiling the smp encoder the unet_ce kinds compile alone
# (inductor on 2 CPU cores: ~100 s for it, ~40 s for a pix2pix generator).
COMPILED = [*((kind, None) for kind in MEMBER_KINDS), ("joint", ("pix2pix", "unet_l1"))]


@pytest.mark.parametrize("name, joint_members", COMPILED, ids=[name for name, _ in COMPILED])
def test_compile_trains_every_model_as_eager_does(name, joint_members):
    """torch.compile (inductor, on the CPU) through the engine's step: the same first step as eager, then learning."""
    losses = engine_losses(name, "fp32", False, True, joint_members)
    assert losses[-1] < losses[0], losses
    assert losses[0] == pytest.approx(engine_losses(name, "fp32", False, False, joint_members)[0], rel=1e-4)


def test_a_bf16_compiled_checkpoint_resumes_and_serves_predict_and_segment_in_fp32(workspace, tmp_path):
    """unet_l1 (the member with the smallest graph to compile) under bf16 + compile + channels_last, stopped by
    SIGTERM after its first checkpoint: the same command resumes it, and the checkpoint, saved without
    torch.compile's `_orig_mod.` prefixes, loads for predict and segment with the fp32 settings."""
    fast = {"train": {"precision": "bf16", "compile": True, "channels_last": True, "n_epochs": 12, "n_epochs_decay": 0,
                      "val_every": 1, "sample_every": 12}}
    params = tiny_params(tmp_path, fast, name="bf16.yaml")
    out = tmp_path / "train"
    argv = [*CLI, *train_argv(workspace, out, member="unet_l1", params=params)]
    env = {**os.environ, **ONE_THREAD}
    first = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    last = out / "checkpoints" / "last.pt"
    deadline = time.time() + 600
    while not last.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    stopped_at = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
    assert 1 <= stopped_at < 12
    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"after epoch {stopped_at}" in second.stderr
    assert [int(row["epoch"]) for row in read_history(out / "history.csv")] == list(range(1, 13))
    keys = torch.load(out / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)["model"]
    assert not any("_orig_mod" in key for key in keys)

    fp32 = tiny_params(tmp_path, name="fp32.yaml")
    subprocess.run([*CLI, "--params", str(fp32), "predict", "--member", "unet_l1", "--data", str(workspace / "data"),
                    "--checkpoint", str(out / "checkpoints" / "best.pt"), "--out", str(tmp_path / "predict"),
                    "--split", "test"], env=env, check=True, capture_output=True)
    assert (tmp_path / "predict" / "test_pred.npy").exists()
    model_dir = tmp_path / "runs" / "members" / "unet_l1"
    model_dir.mkdir(parents=True)
    (model_dir / "train").symlink_to(out)
    photos = workspace / "photos"
    photos.mkdir(exist_ok=True)
    from PIL import Image

    Image.new("RGB", (40, 24), (90, 120, 200)).save(photos / "a.png")
    result = subprocess.run([*CLI, "--params", str(fp32), "segment", "--model", str(model_dir), "--data",
                             str(workspace / "data"), "--out", str(tmp_path / "labels"), str(photos / "a.png")],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    with Image.open(tmp_path / "labels" / "a.png") as label:
        assert label.size == (40, 24)


@pytest.mark.parametrize("delta, says", [
    ({"train": {"precision": "fp16", "device": "cpu"}}, "train.precision: fp16 needs CUDA's gradient scaler"),
    ({"train": {"sync_batchnorm": True}}, "train.sync_batchnorm: pools BatchNorm statistics over processes"),
    ({"train": {"sync_batchnorm": True, "processes": 2, "device": "cpu"}},
     "train.sync_batchnorm: SyncBatchNorm runs on CUDA only"),
])
def test_a_setting_the_device_cannot_run_is_one_line_before_any_work(workspace, tmp_path, delta, says):
    params = tiny_params(tmp_path, delta)
    out = tmp_path / "out"
    result = subprocess.run([*CLI, *train_argv(workspace, out, params=params)], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("seg-p2p:")]
    assert len(lines) == 1 and says in lines[0], result.stderr
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_evaluate_times_its_models_on_train_device(workspace, tmp_path):
    """Costs are measured where the study's models run (train.device), not on the CPU whatever the study: asked for
    CUDA where there is none, evaluate refuses in one line naming the setting before it reads any run."""
    params = tiny_params(tmp_path, {"train": {"device": "cuda"}})
    (tmp_path / "runs").mkdir()
    out = tmp_path / "evaluate"
    result = subprocess.run([*CLI, "--params", str(params), "evaluate", "--seed", "0", "--data",
                             str(workspace / "data"), "--runs", str(tmp_path / "runs"), "--out", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "train.device: cuda is not available" in result.stderr.splitlines()[-1]
    assert not out.exists()


def test_a_pretrained_encoder_gets_the_input_its_weights_were_trained_on(monkeypatch):
    """Photos arrive in [-1, 1]; with encoder_weights the smp encoder sees smp's range and mean/std for them (ImageNet:
    [0, 1], then (x - mean) / std; timm's encoders read them offline). The weights are never downloaded: Unet is
    built without them."""
    import segmentation_models_pytorch as smp

    from seg_p2p.models.unet_ce import UnetCE, UnetCEConfig

    unet = smp.Unet
    monkeypatch.setattr(smp, "Unet", lambda *args, **kwargs: unet(*args, **{**kwargs, "encoder_weights": None}))
    model = UnetCE(UnetCEConfig(kind="unet_ce", encoder=TINY_ENCODER, encoder_weights="imagenet"), num_classes=3)
    seen = []
    model.unet.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    photo = torch.rand(1, 3, 32, 32) * 2 - 1
    model.eval()({"photo": photo})
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(seen[0], ((photo + 1) / 2 - mean) / std)
    assert "imagenet" in model.input_normalisation
    plain = UnetCE(UnetCEConfig(kind="unet_ce", encoder=TINY_ENCODER), num_classes=3)
    plain.unet.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    plain.eval()({"photo": photo})
    torch.testing.assert_close(seen[1], photo)  # from scratch: the photo as it is
