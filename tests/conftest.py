"""Shared fixtures and helpers. Tests never reach the network and read ../shared/data only where present.

The one tiny configuration of the suite is `tiny_settings` (the repo's params.yaml at toy size): written to a
file by `tiny_params` for `seg-p2p` runs, validated in process by `tiny_config`. Test modules import the
helpers from here (`from conftest import ...`); no test module imports another.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

import seg_p2p  # noqa: F401 - first: its import makes this process and its children offline (seg_p2p/__init__.py)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # benchmarks/ is not installed, only seg_p2p
from benchmarks.checkout import commit_all, copy_checkout  # noqa: E402 - a project like a clone, to run DVC in

SHARED_DATA = REPO.parent / "shared" / "data"
SEG_P2P = Path(sys.executable).with_name("seg-p2p")
CLI = [str(SEG_P2P)] if SEG_P2P.exists() else [sys.executable, "-m", "seg_p2p"]
TIMING = {"seconds", "train_seconds", "seconds_per_step"}  # wall-clock columns: never compared
# One thread for these toy models, in this process and its children: 2 OpenMP threads on a busy 2-core
# machine spin and run ~10x slower. Runs that are compared always use the same count.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def shared_dataset(name: str) -> Path:
    """Path of a dataset in ../shared/data, or skip the test where this clone has none."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent (only the project's machines have ../shared)")
    return path


@pytest.fixture(scope="session", autouse=True)
def _session_tracking(tmp_path_factory, mlflow_template):
    """Module- and session-scoped fixtures run before _isolated_tracking: one that trains in process would
    otherwise track into the repo's mlflow.db and pin MLflow's process-wide URI there for every later test."""
    store = tmp_path_factory.mktemp("fixtures") / "mlflow.db"
    shutil.copyfile(mlflow_template, store)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
        yield


@pytest.fixture(autouse=True)
def _isolated_tracking(tmp_path, monkeypatch, mlflow_template):
    """Each test tracks into its own sqlite store, a copy of the template, never into the repo's mlflow.db or
    (the experiment's artifact location) the repo's mlruns/."""
    shutil.copyfile(mlflow_template, tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


# ---- the one tiny configuration -----------------------------------------------------------------------

TINY_ENCODER = "tu-resnet10t"  # timm's ResNet-10, params.yaml's: the cheapest smp encoder we run at 32 px


def tiny_settings(delta: dict | None = None) -> dict:
    """The repo's params.yaml at toy size (one seed, 32 px, 12 + 4 + 4 images, ngf/ndf 8, batch 4, 2 + 1 epochs on
    the CPU), plus `delta`."""
    from seg_p2p.settings import deep_merge

    params = deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()), {
        "seeds": [0],
        "data": {"load_size": 32, "crop_size": 32,
                 "synthetic": {"size": 32, "num_train": 12, "num_val": 4, "num_test": 4}},
        "train": {"batch_size": 4, "n_epochs": 2, "n_epochs_decay": 1, "val_every": 1, "sample_every": 3,
                  "device": "cpu"},
    })
    for member in params["members"].values():
        if "generator" in member:
            member["generator"]["ngf"] = 8
        if "discriminator" in member:
            member["discriminator"]["ndf"] = 8
        if "encoder" in member:
            member["encoder"] = TINY_ENCODER
    return deep_merge(params, delta or {})


def tiny_member(kind: str) -> dict:
    """A kind's default settings at toy size (decided by which settings the kind has, never by its name)."""
    from seg_p2p.models import MEMBER_KINDS

    fields = MEMBER_KINDS[kind].config.model_fields
    member = {"kind": kind}
    if "generator" in fields:
        member["generator"] = {"ngf": 8}
    if "discriminator" in fields:
        member["discriminator"] = {"ndf": 8}
    if "encoder" in fields:
        member["encoder"] = TINY_ENCODER
    return member


def tiny_params(folder: Path, delta: dict | None = None, name: str = "params.yaml") -> Path:
    """`tiny_settings(delta)` written to folder/name, for `seg-p2p --params`."""
    path = folder / name
    path.write_text(yaml.safe_dump(tiny_settings(delta), sort_keys=False))
    return path


def tiny_project(folder: Path, delta: dict | None = None) -> Path:
    """A project folder as `seg-p2p` runs from it: tiny params.yaml (`tiny_params`) beside the repo's ensembles/, which
    holds the strategies it names (load_config refuses a strategy without its file). Returns the params path."""
    shutil.copytree(REPO / "ensembles", folder / "ensembles", dirs_exist_ok=True)
    return tiny_params(folder, delta)


def tiny_config(**delta):
    """`tiny_settings` as a validated Config, for in-process tests; keywords are top-level sections laid over it,
    e.g. tiny_config(train={"n_epochs": 30})."""
    from seg_p2p.config import Config

    return Config.model_validate(tiny_settings(delta))


def prepare_workspace(folder: Path) -> Path:
    """A project folder (`tiny_project`) holding the prepared synthetic dataset in data/."""
    from seg_p2p.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    tiny_project(folder)
    main(["--params", str(folder / "params.yaml"), "prepare", "--out", str(folder / "data")])
    return folder


def train_argv(workspace: Path, out: Path, member: str = "pix2pix", seed: int = 0,
               params: Path | None = None) -> list[str]:
    return ["--params", str(params or workspace / "params.yaml"), "train", "--member", member, "--seed", str(seed),
            "--data", str(workspace / "data"), "--out", str(out)]


# ---- a few steps of the engine ---------------------------------------------------------------------------

ENGINE_STEPS = 4


def build_for_engine(name: str, joint_members: tuple[str, ...] | None = None):
    """A toy-size member of kind `name`, or (`joint`, `joint-no-d`) a joint ensemble of the tiny members (all, or
    `joint_members`; balance none: the loss it minimises does not move with running means, so a fall is learning)."""
    import torch

    from seg_p2p.data.spec import load_spec
    from seg_p2p.ensemble.fusion import FusionConfig, JointEnsemble
    from seg_p2p.models import MEMBER_KINDS, build_member

    spec = load_spec("synthetic")
    torch.manual_seed(0)
    if name in MEMBER_KINDS:
        return build_member(tiny_config(members={"m": tiny_member(name)}), "m", spec)
    cfg = tiny_config()
    members = {member: build_member(cfg, member, spec) for member in joint_members or cfg.members}
    return JointEnsemble(members, spec.num_classes, FusionConfig(hidden=8, layers=2), name == "joint", 0.5, "none",
                         0.01)


def fixed_batch(n: int = 4, size: int = 32) -> dict:
    """Random photos and masks of the synthetic dataset's classes, the same every call."""
    import torch

    from seg_p2p.data.spec import load_spec

    generator = torch.Generator().manual_seed(1)
    classes = load_spec("synthetic").num_classes
    return {"photo": torch.rand(n, 3, size, size, generator=generator) * 2 - 1,
            "mask": torch.randint(0, classes, (n, size, size), generator=generator), "index": torch.arange(n)}


def supervised(model, stats: dict, generator_keys: set[str]) -> float:
    """The generator's loss minus its adversarial terms (a GAN term need not fall while its generator learns)."""
    adversarial = set(model.adversarial_losses)
    for name, member in getattr(model, "members", {}).items():
        adversarial |= {f"{key}.{name}" for key in member.adversarial_losses}
    return sum(stats[key].item() for key in generator_keys if key.startswith("loss_") and key not in adversarial)


@functools.cache
def engine_losses(name: str, precision: str, channels_last: bool, compile: bool = False,
                  joint_members: tuple[str, ...] | None = None, device: str = "cpu") -> tuple[float, ...]:
    """ENGINE_STEPS steps of the engine's own train_step on one fixed batch, the model of kind `name` (or a joint
    ensemble, test_precision.py) placed as fit places it; each step's supervised loss, every loss checked finite.
    Cached: the fp32 run a bf16 or compiled run is compared with trains once per session."""
    import math

    import torch

    from seg_p2p.device import Precision, to_device
    from seg_p2p.engine import train_step

    model = build_for_engine(name, joint_members).train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    batch = to_device(fixed_batch(), torch.device(device), channels_last)
    with torch.no_grad():
        generator_keys = set(model.generator_losses(batch, model(batch)))
    optimizers = model.optimizers()
    step_model = torch.compile(model) if compile else model
    torch.manual_seed(0)
    losses = []
    precision_ = Precision(precision, torch.device(device))
    for _ in range(ENGINE_STEPS):
        stats = train_step(step_model, batch, optimizers, precision_)
        bad = [key for key, value in stats.items() if not math.isfinite(value.item())]
        assert not bad, f"{name} {precision}: {bad} not finite"
        losses.append(supervised(model, stats, generator_keys))
    return tuple(losses)


# ---- a DVC project to run ------------------------------------------------------------------------------

BIN = Path(sys.executable).parent


def run_in(args: list[str], cwd: Path, check: bool = True, timeout: int = 900):
    """A command in `cwd` with this environment's scripts on PATH, one thread and the folder's own MLflow store."""
    import subprocess

    env = {**os.environ, **ONE_THREAD, "PATH": f"{BIN}:{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{cwd}/mlflow.db"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode:
        raise AssertionError(f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def study_repo(root: Path, delta: dict, short_strategies: tuple[str, ...] = ()) -> Path:
    """A clean-clone-like copy of the repo (tracked and unignored files) with tiny params (tiny_settings(delta))
    and the named strategies cut to one epoch, committed to its own git repository: ready for `dvc repro`."""
    copy_checkout(root)
    tiny_params(root, delta)
    for name in short_strategies:
        path = root / "ensembles" / f"{name}.yaml"
        path.write_text(yaml.safe_dump(yaml.safe_load(path.read_text()) | {"n_epochs": 1, "n_epochs_decay": 0}))
    commit_all(root, "tiny")
    return root


# ---- reading a run's outputs ----------------------------------------------------------------------------

def read_history(path: Path) -> list[dict]:
    """history.csv without its wall-clock columns."""
    with open(path, newline="") as handle:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(handle)]


def comparable_summary(path: Path) -> dict:
    """summary.json without its wall-clock entries."""
    summary = json.loads(path.read_text())
    for key in TIMING:
        summary.pop(key, None)
        summary.get("final", {}).pop(key, None)
    return summary


# ---- fake downloads of the published datasets (VOC, ADE20K), 16x12 px --------------------------------------

VOC_SPLITS = {"train": ("2007_000032", "2007_000039", "2008_000002"), "val": ("2007_000033", "2007_000042")}
ADE20K_SPLITS = {"train": ("ADE_train_00000001", "ADE_train_00000002", "ADE_train_00000010"),
                 "val": ("ADE_val_00000001", "ADE_val_00000002")}


def save_image(path: Path, image) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(path)


def write_voc(root: Path) -> dict[str, list]:
    """VOCdevkit/VOC2012 as downloaded: listed JPEG photos, SegmentationClass palette PNGs (class ids 0..20, a void
    border of 255, VOC's colour map as their palette), ImageSets/Segmentation lists (and trainval.txt, not read), and
    a detection-only JPEG no list names. Returns {split: [(name, label ids)]}, in list order."""
    import numpy as np
    from PIL import Image

    from seg_p2p.data.spec import load_spec

    palette = np.zeros((256, 3), np.uint8)
    palette[:21], palette[255] = load_spec("voc").palette, (224, 224, 192)
    rng, written = np.random.default_rng(0), {}
    for split, names in VOC_SPLITS.items():
        written[split] = []
        for name in names:
            ids = rng.integers(0, 21, (12, 16)).astype(np.uint8)
            ids[0] = 255
            label = Image.fromarray(ids, mode="L")
            label.putpalette(palette.ravel().tolist())
            save_image(root / "SegmentationClass" / f"{name}.png", label)
            save_image(root / "JPEGImages" / f"{name}.jpg", rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
            written[split].append((name, ids))
        lists = root / "ImageSets" / "Segmentation"
        lists.mkdir(parents=True, exist_ok=True)
        (lists / f"{split}.txt").write_text("".join(f"{name}\n" for name in names))
    (lists / "trainval.txt").write_text("".join(f"{name}\n" for names in VOC_SPLITS.values() for name in names))
    save_image(root / "JPEGImages" / "2012_004000.jpg", np.zeros((12, 16, 3), np.uint8))
    return written


def write_ade20k(root: Path) -> dict[str, list]:
    """ADEChallengeData2016 as downloaded: images/ JPEGs, annotations/ single-channel PNGs of values 0 ('other')
    to 150, each of them present. Returns {split: [(name, annotation values)]}."""
    import numpy as np

    rng, written = np.random.default_rng(0), {}
    for split, names in ADE20K_SPLITS.items():
        folder = {"train": "training", "val": "validation"}[split]
        written[split] = []
        for name in names:
            values = rng.integers(0, 151, (12, 16)).astype(np.uint8)
            values.ravel()[:151] = np.arange(151)
            save_image(root / "annotations" / folder / f"{name}.png", values)
            save_image(root / "images" / folder / f"{name}.jpg", rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
            written[split].append((name, values))
    return written


# ---- fixtures --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def one_thread():
    """torch.set_num_threads(1) for a module's in-process runs (restored after it); see ONE_THREAD."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def empty_mlflow_store(folder: Path) -> Path:
    """An sqlite MLflow store with its tables made (MLflow's migrations take seconds; copies are instant)."""
    from mlflow.tracking import MlflowClient

    path = folder / "template.db"
    # An experiment made by set_experiment would keep its artifacts (best.pt, samples) under the cwd's mlruns/:
    # in process, the repo's. Every copy of this store keeps them here instead.
    MlflowClient(tracking_uri=f"sqlite:///{path}").create_experiment("seg_p2p",
                                                                      artifact_location=(folder / "artifacts").as_uri())
    return path


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """A ready-made empty store, copied wherever a test or fixture tracks (never written itself)."""
    return empty_mlflow_store(tmp_path_factory.mktemp("mlflow"))


@pytest.fixture
def mlflow_store(tmp_path) -> Path:
    """The test's own store, tmp_path/mlflow.db (_isolated_tracking made it)."""
    return tmp_path / "mlflow.db"


def tracked_runs(store: Path, stage: str = "train") -> list:
    """The runs of one stage in an sqlite MLflow store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("seg_p2p")
    assert experiment is not None, "no MLflow experiment was created"
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.stage = '{stage}'")


def metric_steps(store: Path, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of every logged value of one metric of a run, in step order."""
    from mlflow.tracking import MlflowClient

    history = MlflowClient(tracking_uri=f"sqlite:///{store}").get_metric_history(run_id, key)
    return sorted((metric.step, metric.value) for metric in history)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, one_thread) -> Path:
    """A module's tiny params.yaml and prepared synthetic dataset (prepare_workspace)."""
    return prepare_workspace(tmp_path_factory.mktemp("workspace"))
