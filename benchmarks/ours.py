"""seg_p2p's own way of training, as the benchmark runs it: the configs it builds, its data path and its step.

The prepared uint8 cache -> SegmentationDataset with the albumentations jitter -> DataLoader with fit's seeded
permutation -> the engine's own `to_device`, `train_step` and `LossLog` (a host sync only every LOG_EVERY steps),
with the member's own (fused) optimizers and the global flags `seed_everything` sets from the config.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.utils.deterministic
from torch.utils.data import DataLoader

from benchmarks.measure import Runner
from seg_p2p.config import Config, load_config
from seg_p2p.data.dataset import SegmentationDataset
from seg_p2p.data.prepare import PreparedData
from seg_p2p.data.transforms import build_transform
from seg_p2p.device import Precision, to_device
from seg_p2p.engine import LOG_EVERY, LossLog, train_step
from seg_p2p.models.member import adam_group, fused_adam
from seg_p2p.seeding import epoch_order, seed_everything


def member_overrides(params: Config, args: argparse.Namespace) -> dict:
    """--ngf for members with a pix2pix generator, --encoder for members with an smp encoder (by their settings)."""
    members = {}
    for name, member in params.members.items():
        fields = type(member).model_fields
        if "generator" in fields:
            members[name] = {"generator": {"ngf": args.ngf}}
        elif "encoder" in fields and args.encoder:
            members[name] = {"encoder": args.encoder}
    return members


def build_config(args: argparse.Namespace, size: int, batch: int, device: torch.device) -> Config:
    """params.yaml with the benchmark's data and, on CUDA, the GPU levers (bf16, channels_last, cudnn.benchmark)."""
    cuda = device.type == "cuda"
    params = load_config(args.params)
    train = {"batch_size": batch, "device": device.type, "precision": "bf16" if cuda else "fp32", "channels_last": cuda}
    if cuda:
        train["deterministic"] = False  # fit sets cudnn.benchmark = not deterministic
    if args.workers is not None:
        train["num_workers"] = args.workers
    overrides = {
        "data": {"dataset": "synthetic", "load_size": round(size * 286 / 256), "crop_size": size, "flip": True,
                 "synthetic": {"size": size, "num_train": max(args.images, batch), "num_val": 1, "num_test": 1,
                               "seed": args.seed}},
        "train": train,
        "members": member_overrides(params, args),
    }
    return load_config(args.params, overrides=overrides)


def our_batches(data: PreparedData, cfg: Config, batch: int, seed: int, pin: bool) -> Iterator[dict]:
    """Endless batches exactly as fit draws them: set_epoch, a seeded permutation, a DataLoader per epoch."""
    dataset = SegmentationDataset(data, "train", build_transform(cfg.data, cfg.inference.mode, train=True), seed)
    epoch = 0
    while True:
        dataset.set_epoch(epoch)
        # drop_last: a short final batch would time a different amount of work (fit keeps it)
        yield from DataLoader(dataset, batch_size=batch, sampler=epoch_order(len(dataset), seed, epoch),
                              num_workers=cfg.train.num_workers,
                              pin_memory=pin, drop_last=True)
        epoch += 1


def our_runner(name: str, batches: Iterator[dict], step_model, optimizers: dict, precision: Precision,
               device: torch.device, cfg: Config, images: int, flags: Callable[[], None]) -> Runner:
    """fit's loop body from the engine itself: to_device, train_step, LossLog.add, and LossLog.check (fit's host
    sync) every LOG_EVERY steps (not at epoch ends: the benchmark's tiny epochs would add syncs a real one has not)."""
    log = LossLog(name, device, cfg.train.collapse_patience, Path("last.pt"))
    steps = iter(range(1, 2**62))

    def step() -> None:
        log.add(train_step(step_model, to_device(next(batches), device, cfg.train.channels_last), optimizers,
                           precision))
        if next(steps) % LOG_EVERY == 0:
            log.check(1, LOG_EVERY)
            log.start_epoch()

    return Runner(name, images, step, flags)


def our_flags() -> Callable[[], None]:
    """The process-wide flags fit runs under (what seed_everything just set), to restore before each ours block."""
    state = (torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), torch.utils.deterministic.fill_uninitialized_memory)

    def enter() -> None:
        torch.backends.cudnn.benchmark = state[0]
        torch.use_deterministic_algorithms(state[1], warn_only=state[2])
        torch.utils.deterministic.fill_uninitialized_memory = state[3]

    return enter


def levers(cfg: Config, device: torch.device, args: argparse.Namespace) -> dict:
    """What ours runs with, read from seg_p2p itself (so a later change to fused_adam or seed_everything shows)."""
    probe = fused_adam([adam_group(torch.nn.Linear(1, 1).to(device), next(iter(cfg.members.values())).optimizer)])
    seed_everything(args.seed, cfg.train.deterministic)
    fill = torch.are_deterministic_algorithms_enabled() and torch.utils.deterministic.fill_uninitialized_memory
    return {"precision": cfg.train.precision, "channels_last": cfg.train.channels_last,
            "fused_adam": bool(probe.defaults.get("fused")),
            "cudnn_benchmark": torch.backends.cudnn.benchmark if device.type == "cuda" else None,
            "deterministic": cfg.train.deterministic,
            "nan_fill_of_new_tensors": fill,
            "num_workers": cfg.train.num_workers}
