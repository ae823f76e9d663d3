"""`seg-p2p train --member NAME`: fit one member on train, validate on val, with the one engine (engine.fit)."""

from __future__ import annotations

from pathlib import Path

from seg_p2p.atomic import check_writable
from seg_p2p.config import Config
from seg_p2p.device import training_device
from seg_p2p.engine import TrainingRun, TrainingDiverged, fit
from seg_p2p.errors import UserError
from seg_p2p.fingerprint import fingerprint
from seg_p2p.inference import Inference
from seg_p2p.run_paths import checkpoint
from seg_p2p.models import build_member
from seg_p2p.budget import member_training
from seg_p2p.models.registry import no_reference
from seg_p2p.seeding import seed_everything
from seg_p2p.tracking import Tracker, flatten


def check_training(cfg: Config, out_dir: Path) -> None:
    """Refuse a missing device, settings it cannot run and an unwritable --out, before any work."""
    training_device(cfg.train)
    check_writable(out_dir)


def train_member(cfg: Config, name: str, seed: int, data_dir: Path, out_dir: Path, resume: bool = True) -> dict:
    from seg_p2p.data.dataset import SegmentationDataset
    from seg_p2p.data.prepare import PreparedData
    from seg_p2p.data.transforms import build_transform

    if no_reference(cfg, name, out_dir):
        return {}
    data = PreparedData(data_dir)
    settings, training = member_training(cfg, name, data.spec)
    seed_everything(seed, cfg.train.deterministic)  # the initial weights too: same seed, same run
    model = build_member(cfg, name, data.spec)
    check_training(cfg, out_dir)
    train_set = SegmentationDataset(data, "train", build_transform(cfg.data, cfg.inference.mode, train=True), seed)
    val_set = SegmentationDataset(data, "val", build_transform(cfg.data, cfg.inference.mode, train=False), seed)
    # The inference mode decides the training crops and how val picks best.pt: part of the run's identity.
    identity = fingerprint(settings.model_dump(), training.model_dump(), cfg.data.model_dump(),
                           cfg.inference.model_dump(), seed, code=__name__, inputs=data.files())
    tags = {"stage": "train", "member": name, "seed": str(seed)}
    params = flatten({"member": settings.model_dump(), "train": training.model_dump(),
                      "data": cfg.data.model_dump(), "inference": cfg.inference.model_dump(), "seed": seed,
                      "input_normalisation": model.input_normalisation or "none"})
    with Tracker(cfg, f"train/{name}", tags, params, defer=True) as tracker:  # fit opens it, knowing the run
        job = TrainingRun(training, seed, out_dir, tracker, identity, data.spec.palette, data.spec.num_classes,
                  Inference.from_config(cfg))
        try:
            summary = fit(model, train_set, val_set, job, resume)
        except TrainingDiverged as exc:
            raise UserError(str(exc)) from None
        tracker.log_checkpoint(checkpoint(out_dir))
    return summary
