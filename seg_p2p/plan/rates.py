"""How a plan's FLOPs become seconds: a given throughput, or each member's training step timed on this machine
(`seg-p2p plan --measure`).

A few engine train_steps of every member at the study's batch and crop size, on `train.device` (on this machine's
CPU where the study asks for a GPU it has not got, said in the hours' label), after warm-up steps; data loading,
validation and checkpoints are not timed, as the FLOP count does not hold them either.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import torch

from seg_p2p.plan.estimate import StagePlan

WARMUP, TIMED = 2, 5


@dataclass
class Rates:
    """How FLOPs become seconds: one achieved FLOP/s for every stage (`--throughput`), or each member's measured
    (FLOPs, seconds) of one step (`--measure`), a stage of several members at their combined rate."""

    device: str  # what the hours are for
    flops_per_second: float | None = None
    measured: dict[str, tuple[float, float]] | None = None

    def seconds(self, stage: StagePlan) -> float:
        if self.flops_per_second:
            return stage.flops / self.flops_per_second if stage.rates else 0.0
        if not stage.rates:
            return 0.0
        flops, seconds = (sum(self.measured[m][i] for m in stage.rates) for i in (0, 1))
        return stage.flops * seconds / flops


def timed_step(cfg, name: str, spec, device: torch.device) -> float:
    """Seconds of one train_step of member `name` on `device`, the median of TIMED after WARMUP."""
    from seg_p2p.device import Precision
    from seg_p2p.engine import train_step
    from seg_p2p.models import build_member

    torch.manual_seed(0)
    model = build_member(cfg, name, spec).to(device).train()
    batch, size = cfg.train.batch_size, cfg.data.crop_size
    data = {"photo": torch.rand(batch, 3, size, size, device=device) * 2 - 1,
            "mask": torch.randint(0, spec.num_classes, (batch, size, size), device=device),
            "index": torch.arange(batch, device=device)}
    optimizers = model.optimizers()
    precision = Precision(cfg.train.precision if device.type == "cuda" else "fp32", device)
    times = []
    for i in range(WARMUP + TIMED):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        train_step(model, data, optimizers, precision)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= WARMUP:
            times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def measured_rates(cfg, spec, estimator) -> Rates:
    from seg_p2p.device import device_name, select_device

    wanted = cfg.train.device
    device = select_device("cpu" if wanted == "cuda" and not torch.cuda.is_available() else wanted)
    label = f"{device_name(device)} ({torch.get_num_threads()} threads)" if device.type == "cpu" else \
        device_name(device)
    if wanted == "cuda" and device.type == "cpu":
        label += ", measured on this machine's CPU: the study asks for a GPU it has not got"
    measured = {}
    for name in cfg.members:
        print(f"seg-p2p plan: timing {name} on {device.type}", file=sys.stderr, flush=True)
        measured[name] = (float(estimator.member(name).train_flops), timed_step(cfg, name, spec, device))
    return Rates(label, measured=measured)
