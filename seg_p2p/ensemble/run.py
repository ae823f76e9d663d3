"""`seg-p2p ensemble --strategy NAME`: run one strategy of ensembles/ for one seed.

Reads the members' outputs under `runs/seed{K}/{member}/` and writes `{out}/predict/` in the same
format as a member (so evaluate treats both alike); learned and joint also write `{out}/train/`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from seg_p2p.atomic import open_npy, write_json
from seg_p2p.config import Config
from seg_p2p.ensemble.combiners import combine
from seg_p2p.ensemble.fusion import JointEnsemble, ProbabilityDataset, StackingModel
from seg_p2p.ensemble.strategy import FIXED_COMBINERS, StrategyConfig, load_strategy
from seg_p2p.errors import UserError
from seg_p2p.models import build_member
from seg_p2p.predict import predict_split
from seg_p2p.tracking import Tracker, flatten
from seg_p2p.train import TrainingDiverged, fingerprint, fit, load_weights, select_device

CHUNK = 16  # images combined at a time: bounded memory whatever the split size


def probs_path(runs_dir: Path, member: str, split: str) -> Path:
    return runs_dir / member / "predict" / f"{split}_probs.npy"


def weights_path(runs_dir: Path, member: str) -> Path:
    return runs_dir / member / "train" / "checkpoints" / "best.pt"


def member_probs(runs_dir: Path, members: list[str], split: str) -> list[np.ndarray]:
    arrays = []
    for member in members:
        path = probs_path(runs_dir, member, split)
        if not path.exists():
            raise UserError(f"{path}: missing; run `dvc repro predict` (or `seg-p2p predict --member {member}`) "
                            "first")
        arrays.append(np.load(path, mmap_mode="r"))
    return arrays


def run_fixed(strategy: StrategyConfig, probs: list[np.ndarray], out_dir: Path, data) -> None:
    from PIL import Image

    from seg_p2p.atomic import atomic_dir, save_npy

    shape = probs[0].shape
    with open_npy(out_dir / "predict" / "test_probs.npy", np.float16, shape) as scores:
        for start in range(0, shape[0], CHUNK):
            chunk = np.stack([p[start:start + CHUNK] for p in probs])
            scores[start:start + CHUNK] = combine(strategy.combiner, chunk).astype(np.float16)
        pred = np.asarray(scores).argmax(1).astype(np.uint8)
    save_npy(out_dir / "predict" / "test_pred.npy", pred)
    with atomic_dir(out_dir / "predict" / "test_masks") as folder:
        for image_name, mask in zip(data.names("test"), pred):
            Image.fromarray(mask).save(folder / f"{Path(image_name).stem}.png")


def _with_epochs(cfg: Config, strategy: StrategyConfig) -> Config:
    changes = {key: getattr(strategy, key) for key in ("n_epochs", "n_epochs_decay")
               if getattr(strategy, key) is not None}
    return cfg.model_copy(update={"train": cfg.train.model_copy(update=changes)}) if changes else cfg


def run_trained(cfg: Config, strategy: StrategyConfig, name: str, seed: int, runs_dir: Path, out_dir: Path,
                data) -> None:
    from seg_p2p.data.dataset import SegmentationDataset
    from seg_p2p.data.transforms import build_transform

    cfg = _with_epochs(cfg, strategy)
    spec = data.spec
    eval_transform = build_transform(cfg.data, train=False)
    if strategy.combiner == "learned":
        model = StackingModel(len(strategy.members), spec.num_classes, strategy.fusion)
        base = SegmentationDataset(data, "val", eval_transform, seed)
        train_set = ProbabilityDataset(member_probs(runs_dir, strategy.members, "val"), base)
        member_inputs = [probs_path(runs_dir, m, "val") for m in strategy.members]
        val_set = None  # stacking never sees test, and val is its training data
        test_set = ProbabilityDataset(member_probs(runs_dir, strategy.members, "test"),
                                      SegmentationDataset(data, "test", eval_transform, seed))
    else:
        members = {m: build_member(cfg, m, spec) for m in strategy.members}
        member_inputs = []
        if strategy.init == "members":
            member_inputs = [weights_path(runs_dir, m) for m in strategy.members]
            for member, weights in zip(members.values(), member_inputs):
                load_weights(member, weights)
        model = JointEnsemble(members, spec.num_classes, strategy.fusion, strategy.discriminator)
        train_set = SegmentationDataset(data, "train", build_transform(cfg.data, train=True), seed)
        val_set = SegmentationDataset(data, "val", eval_transform, seed)
        test_set = SegmentationDataset(data, "test", eval_transform, seed)

    identity = fingerprint(strategy.model_dump(), {m: cfg.members[m].model_dump() for m in strategy.members},
                           cfg.train.model_dump(), cfg.data.model_dump(), seed, inputs=data.files() + member_inputs)
    with strategy_tracker(cfg, strategy, name, seed) as tracker:
        best = out_dir / "train" / "checkpoints" / "best.pt"
        try:
            fit(model, train_set, val_set, cfg, seed, out_dir / "train", tracker, identity, spec.palette,
                spec.num_classes)
        except TrainingDiverged as exc:
            # Divergence of joint training is a finding of the study, not a crash: record it, predict
            # with the last good checkpoint, and let the report count it.
            if not best.exists():
                raise UserError(f"{exc} (before any checkpoint: nothing to evaluate)") from None
            print(f"seg-p2p: warning: {exc}; predicting with {best}", file=sys.stderr)
            write_json(out_dir / "train" / "summary.json", {"diverged": True, "message": str(exc)})
            tracker.log_metrics({"diverged": 1.0})
        load_weights(model, best)
        device = select_device(cfg.train.device)
        model.to(device)
        predict_split(model, test_set, cfg.train.batch_size, device, out_dir / "predict", "test",
                      data.names("test"), spec.num_classes, name)


def strategy_tracker(cfg: Config, strategy: StrategyConfig, name: str, seed: int) -> Tracker:
    """The strategy's nested MLflow run, `ensemble/NAME` (its test scores go to `evaluate/NAME`)."""
    tags = {"stage": "ensemble", "strategy": name, "seed": str(seed), "combiner": strategy.combiner}
    params = flatten({"strategy": strategy.model_dump(), "train": cfg.train.model_dump(), "seed": seed})
    return Tracker(cfg, f"ensemble/{name}", tags, params)


def run_strategy(cfg: Config, name: str, seed: int, data_dir: Path, runs_dir: Path, out_dir: Path,
                 strategies_dir: Path) -> None:
    from seg_p2p.data.prepare import PreparedData

    strategy = load_strategy(cfg, name, strategies_dir)
    data = PreparedData(data_dir)
    torch.manual_seed(seed)
    if strategy.combiner in FIXED_COMBINERS:
        probs = member_probs(runs_dir, strategy.members, "test")  # missing outputs fail before any tracking
        with strategy_tracker(cfg, strategy, name, seed):
            run_fixed(strategy, probs, out_dir, data)
    else:
        run_trained(cfg, strategy, name, seed, runs_dir, out_dir, data)
