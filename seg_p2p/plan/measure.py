"""`seg-p2p plan --measure`: each member's training step timed on this machine, so FLOPs become hours here.

A few engine train_steps of every member at the study's batch and crop size, on `train.device` (on this machine's
CPU where the study asks for a GPU it has not got, said in the hours' label), after warm-up steps; data loading,
validation and checkpoints are not timed, as the FLOP count does not hold them either.
"""

from __future__ import annotations

import sys
import time

import torch

from seg_p2p.plan import Rates

WARMUP, TIMED = 2, 5


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
