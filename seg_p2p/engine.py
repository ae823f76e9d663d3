"""The one training engine: members, joint ensembles and fusion networks all go through `fit`.

Read top to bottom: place the model (device, seeds, precision), build or resume its `TrainState`, then per
epoch: a discriminator step (when the model has one) and a generator step per batch, then, on rank 0,
validation, history, samples and checkpoints (`record_epoch`). Losses stay on the device between host
syncs every LOG_EVERY steps (`LossLog`), so the loop never waits on the accelerator per step.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from seg_p2p import distributed
from seg_p2p.atomic import remove_stale_temps_under, write_json
from seg_p2p.checkpoint import TrainState
from seg_p2p.config import TrainConfig
from seg_p2p.device import Precision, to_device, training_device
from seg_p2p.epoch_outputs import split_scores, write_history, write_samples
from seg_p2p.inference import Inference
from seg_p2p.interrupts import interrupts_raise
from seg_p2p.run_paths import checkpoint
from seg_p2p.models import parameter_counts
from seg_p2p.models.member import SegModel
from seg_p2p.seeding import epoch_order, seed_everything
from seg_p2p.tracking import Tracker, placement

LOG_EVERY = 10  # steps between host syncs (progress bar, finiteness check); never per step
COLLAPSE_LOSS = 1e-3  # discriminator loss below this, for collapse_patience steps, flags a collapse


class TrainingDiverged(Exception):
    """A loss became NaN or infinite: the run stops, the last good checkpoint stays."""


@dataclass
class TrainingRun:
    """One training run: its settings, seed, output folder, MLflow run, identity and the dataset's classes;
    `monitor`: fixed training images (eval transform) on which, with val, the model's pixel tallies and mIoU are
    scored every epoch (train vs val tells a model that fits its training images apart from one that generalises)."""

    settings: TrainConfig
    seed: int
    out_dir: Path
    tracker: Tracker
    identity: str
    palette: np.ndarray
    num_classes: int
    inference: Inference | None  # how val and monitor images are labelled; None: the model's own call (stacking)
    monitor: Dataset | None = None  # fixed training images scored every epoch



def train_step(model: SegModel, batch: dict, optimizers: dict, precision: Precision) -> dict[str, torch.Tensor]:
    """One reference pix2pix iteration: forward G, update D on (real, fake.detach()), update G."""
    with precision.autocast():
        output = model(batch)
    stats = {}
    if "discriminator" in optimizers:
        with precision.autocast():
            d_losses = model.discriminator_losses(batch, output)
        _optimizer_step(optimizers["discriminator"], d_losses, precision.scaler)
        stats.update(d_losses)
    with precision.autocast():
        g_losses = model.generator_losses(batch, output)
    _optimizer_step(optimizers["generator"], g_losses, precision.scaler)
    precision.scaler.update()
    stats.update(g_losses)
    return {key: value.detach().float() for key, value in stats.items()}


def _optimizer_step(optimizer, losses: dict, scaler) -> None:
    total = sum(value for key, value in losses.items() if key.startswith("loss_"))
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(total).backward()
    scaler.step(optimizer)


class LossLog:
    """Sums each logged value on the device over an epoch; `check` is the only host sync (every LOG_EVERY steps):
    it stops a diverged run and flags a discriminator that stays below COLLAPSE_LOSS for `patience` steps."""

    def __init__(self, run_name: str, device: torch.device, patience: int, last_checkpoint: Path):
        self.run_name, self.patience, self.last_checkpoint = run_name, patience, last_checkpoint
        self.collapse_streak = torch.zeros((), device=device)  # spans epochs, like a collapse does
        self.collapsed = False
        self.start_epoch()

    def start_epoch(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}  # per key: a diagnostic may be measured on some steps only

    def add(self, stats: dict[str, torch.Tensor]) -> None:
        for key, value in stats.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1
        d_losses = [value for key, value in stats.items() if key.split(".")[0] == "loss_d"]
        if d_losses:
            self.collapse_streak = (self.collapse_streak + 1) * (torch.stack(d_losses).min() < COLLAPSE_LOSS)

    def check(self, epoch: int, step: int) -> dict[str, float]:
        """The running means (epoch and step count from 1); raises TrainingDiverged on a non-finite one."""
        means = {key: (value / self.counts[key]).item() for key, value in self.sums.items()}
        bad = [key for key, value in means.items() if not math.isfinite(value)]
        if bad:
            kept = (f"the last good checkpoint is {self.last_checkpoint} (epoch {epoch - 1})" if epoch > 1
                    else "no checkpoint was written")
            raise TrainingDiverged(f"{self.run_name}: {bad[0]} is {means[bad[0]]} at epoch {epoch}, step {step}; "
                                   f"{kept}; lower the learning rate or check the data")
        if self.collapse_streak.item() >= self.patience and not self.collapsed:
            self.collapsed = True
            print(f"seg-p2p: warning: {self.run_name}: discriminator loss < 1e-3 for {self.patience} "
                  f"steps at epoch {epoch}: collapse flagged", file=sys.stderr)
        return means

    def epoch_means(self, rank: distributed.Rank) -> dict[str, float]:
        return {key: distributed.all_reduce_mean(value / self.counts[key], rank).item()
                for key, value in self.sums.items()}


def place(model: SegModel, job: TrainingRun) -> tuple[torch.device, distributed.Rank]:
    """Device (this process's GPU under torchrun), seeds, then the model on it in the chosen memory format."""
    device = training_device(job.settings)
    rank = distributed.init(device.type)
    if device.type == "cuda" and rank.world > 1:
        device = torch.device("cuda", rank.local_rank)
        torch.cuda.set_device(device)
    seed_everything(job.seed, job.settings.deterministic)
    memory_format = torch.channels_last if job.settings.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    return device, rank


def fit(model: SegModel, train_set, val_set, job: TrainingRun, resume: bool = True) -> dict:
    """Train `model` on `train_set`; validate on `val_set` (None: no validation, best = last)."""
    settings = job.settings
    device, rank = place(model, job)
    precision = Precision(settings.precision, device)
    state = TrainState(model, settings, precision.scaler)
    remove_stale_temps_under(job.out_dir)  # temp files of a killed run: never outputs, never read
    if resume:
        state.resume(checkpoint(job.out_dir, "last"), job.identity)
    job.tracker.open(state.run_id)  # a resumed training continues its own MLflow run
    state.run_id = job.tracker.run_id
    job.tracker.log_history(state.history)
    distributed.wrap(model, rank, settings.sync_batchnorm)
    if settings.compile:
        torch.use_deterministic_algorithms(settings.deterministic, warn_only=True)  # inductor's flag too
    step_model = torch.compile(model) if settings.compile else model
    pin = device.type == "cuda"
    eval_batch = job.inference.loader_batch_size() if job.inference else settings.batch_size
    val_loader, monitor_loader = (split and DataLoader(split, batch_size=eval_batch, pin_memory=pin,
                                                       num_workers=settings.num_workers)
                                  for split in (val_set, job.monitor))
    steps_per_epoch = math.ceil(len(train_set) / settings.batch_size)
    log = LossLog(job.tracker.run_name, device, settings.collapse_patience, checkpoint(job.out_dir, "last"))
    with interrupts_raise():
        for epoch in range(state.epoch, state.total_epochs):
            train_set.set_epoch(epoch)
            shard, batch_size = distributed.shard(epoch_order(len(train_set), job.seed, epoch), rank,
                                                  settings.batch_size)
            if batch_size > 1 and len(shard) % batch_size == 1:
                # A last batch of one image fails in BatchNorm wherever a feature map is 1x1 (a 32 px ResNet's
                # bottleneck): leave that image out of this epoch; the next epoch's permutation differs.
                shard = shard[:-1]
            loader = DataLoader(train_set, batch_size=batch_size, sampler=shard, num_workers=settings.num_workers,
                                pin_memory=pin)
            step_model.train()
            log.start_epoch()
            started = time.perf_counter()
            bar = tqdm(loader, desc=f"{job.tracker.run_name} epoch {epoch + 1}/{state.total_epochs}", leave=False,
                       file=sys.stderr, dynamic_ncols=True)
            for i, batch in enumerate(bar, 1):
                log.add(train_step(step_model, to_device(batch, device, settings.channels_last), state.optimizers,
                                   precision))
                if i % LOG_EVERY == 0 or i == len(loader):
                    means = log.check(epoch + 1, i)
                    bar.set_postfix({key.removeprefix("loss_"): f"{value:.3g}" for key, value in means.items()})
            row = state.end_epoch(log.epoch_means(rank), time.perf_counter() - started)
            if rank.is_main:  # only rank 0 validates, logs and writes
                record_epoch(model, row, state, job, {"val": val_loader, "train": monitor_loader},
                             val_set or train_set, device)
    summary = training_summary(model, state, steps_per_epoch, val_loader is not None, log.collapsed, device, rank)
    if rank.is_main:
        write_json(job.out_dir / "summary.json", summary)
        job.tracker.log_metrics({"train_seconds": state.train_seconds}
                                | ({"best_val_miou": state.best_miou} if val_loader is not None else {}))
    return summary


def training_summary(model: SegModel, state: TrainState, steps_per_epoch: int, validated: bool, collapsed: bool,
                     device: torch.device, rank) -> dict:
    """summary.json: what the training did, where, and at what speed."""
    return {"epochs": state.total_epochs, "train_seconds": round(state.train_seconds, 3),
            "seconds_per_step": round(state.train_seconds / (state.total_epochs * steps_per_epoch), 5),
            "best_val_miou": state.best_miou if validated else None,
            "final": state.history[-1] if state.history else {}, "discriminator_collapse": collapsed,
            "diverged": False, "params": parameter_counts(model), "device": str(device),
            "input_normalisation": model.input_normalisation,
            "placement": placement() | {"threads": torch.get_num_threads(), "processes": rank.world,
                                        "backend": torch.distributed.get_backend() if rank.launched else None}}


def record_epoch(model: SegModel, row: dict, state: TrainState, job: TrainingRun, loaders: dict, sample_set,
                 device: torch.device) -> None:
    """Rank 0's end of an epoch: validate (and score the monitor images), draw samples, write history.csv and the
    checkpoints (last.pt last: it is the epoch's commit point, a resumed run starts after it), then log to MLflow.
    The global RNG is drawn in that order."""
    settings = job.settings
    is_last = row["epoch"] == state.total_epochs
    monitored = loaders["train"] is not None  # then val and the monitor images are scored every epoch
    for split, loader in loaders.items():
        validation = split == "val" and (row["epoch"] % settings.val_every == 0 or is_last)
        if loader is None or not (validation or monitored):
            continue
        with distributed.unwrapped(model):
            scores = split_scores(model, loader, device, settings.channels_last, job.num_classes, job.inference)
        if validation:
            row["val_miou"] = scores["miou"]
        if monitored:  # val mIoU only on validation epochs: it picks best.pt
            row |= {f"{split}_{key}": value for key, value in scores.items() if (split, key) != ("val", "miou")}
    state.history.append(row)
    grid = None
    if row["epoch"] % settings.sample_every == 0 or is_last:
        with distributed.unwrapped(model):
            grid = write_samples(model, sample_set, device, job.palette, job.out_dir / "samples", row["epoch"],
                                 job.inference)
    write_history(job.out_dir / "history.csv", state.history)
    state.save(job.out_dir, job.identity, job.palette, row.get("val_miou"), loaders["val"] is not None)
    # MLflow after the commit: a kill in between is caught up on resume (Tracker.log_history), never logged twice.
    job.tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
    if grid is not None:
        job.tracker.log_artifact(grid, "samples")
