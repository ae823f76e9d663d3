"""What one training step of a model costs, counted without running it: FLOPs, weights, optimizer state, activations.

Every model is built on PyTorch's meta device (shapes, no storage, no arithmetic; small steps for real on the CPU,
which is quicker there) and one full `engine.train_step` runs on a batch under `torch.utils.flop_counter.FlopCounterMode`, as `benchmarks/train_step.py`
counts a step: forward, the discriminator's step and the generator's, 2 FLOPs per multiply-add. The tensors
autograd saves for the backward passes, counted on the way, are the step's activations. Nothing is allocated, so
the paper's unet_256 at 256 px costs a fraction of a second on a laptop; `seg-p2p plan` and the budget-matched
reference network (what its training budget is) both count here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

ADAM_STATES = 2  # Adam keeps two moments per trainable parameter
REAL_STEP_PIXELS = 2**16  # batch x crop pixels up to which a step is counted on the CPU for real (counting_device)


class _Unstepped:
    """An optimizer that updates nothing: its step is elementwise work a FLOP counter does not count, and on meta
    tensors Adam's per-tensor loop would cost the count most of its time."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass

    def step(self) -> None:
        pass


@dataclass(frozen=True)
class StepCost:
    """One train_step at `batch` images of `size` px."""

    train_flops: int  # forward and every backward of one step
    inference_flops: int  # the inference network's forward, per image
    weight_bytes: int  # parameters and buffers
    optimizer_bytes: int  # gradients and Adam's moments of the trainable parameters
    activation_bytes: int  # tensors saved for backward during the step (weights excluded), at `batch`
    state_tensors: int  # entries of the model's state dict (each costs a checkpoint a record of its own)

    @property
    def memory_bytes(self) -> int:
        """Peak memory of a training: weights, optimizer state and the step's activations."""
        return self.weight_bytes + self.optimizer_bytes + self.activation_bytes


def counting_device(batch: int, size: int) -> torch.device:
    """Where a step is counted: the meta device, except for steps so small that running them for real on the CPU
    is quicker than meta's per-operator Python (a 32-px step: 50 ms real, 2 s on meta). Both count the same FLOPs."""
    return torch.device("cpu" if batch * size * size <= REAL_STEP_PIXELS else "meta")


def counting_batch(batch: int, size: int, num_classes: int, device: torch.device, stacked_members: int = 0) -> dict:
    """A training batch on `device`; `stacked_members`: also the members' stored probabilities (stacking)."""
    data = {"photo": torch.zeros(batch, 3, size, size, device=device),
            "mask": torch.zeros(batch, size, size, dtype=torch.long, device=device),
            "index": torch.arange(batch, device=device)}
    if stacked_members:
        data["probs"] = torch.full((batch, stacked_members, num_classes, size, size), 1 / num_classes, device=device)
    return data


def step_cost(model, batch: int, size: int, num_classes: int, activation_scale: float = 1.0,
              stacked_members: int = 0) -> StepCost:
    """The cost of one train_step of `model`, built on counting_device(batch, size) (`with torch.device(...)`).
    `activation_scale`: the precision's bytes per activation over fp32's (0.5 under bf16/fp16 autocast);
    `stacked_members`: a stacking model's inputs (its inference is the fusion net's share of the step)."""
    from seg_p2p.device import Precision
    from seg_p2p.engine import train_step
    from seg_p2p.metrics import flops_per_image

    model.train()
    weights = {id(t) for t in (*model.parameters(), *model.buffers())}
    saved: dict[int, int] = {}

    def pack(tensor):
        if id(tensor) not in weights:
            saved[id(tensor)] = tensor.numel() * tensor.element_size()
        return tensor

    data = counting_batch(batch, size, num_classes, next(model.parameters()).device, stacked_members)
    with torch.random.fork_rng(), FlopCounterMode(display=False) as counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        train_step(model, data, dict.fromkeys(model.optimizer_groups(), _Unstepped()),
                   Precision("fp32", torch.device("cpu")))
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    train_flops = counter.get_total_flops()
    return StepCost(
        train_flops=train_flops,
        inference_flops=(train_flops // (3 * batch) if stacked_members else
                         flops_per_image(model.inference_network(), data["photo"][:1])),
        weight_bytes=sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers())),
        optimizer_bytes=trainable * (1 + ADAM_STATES),
        activation_bytes=round(sum(saved.values()) * activation_scale),
        state_tensors=len(model.state_dict()))


def activation_scale(precision: str) -> float:
    return 1.0 if precision == "fp32" else 0.5


_counted: dict[str, StepCost] = {}  # member_step_cost's in this process: the plan and the reference's budget share them


def member_step_cost(cfg, name: str, spec, batch: int | None = None, discriminator: bool = True) -> StepCost:
    """One train_step of member `name` of the study `cfg` (or of its reference) at its batch size (or `batch`) and
    crop size; `discriminator=False`: as a joint run without D trains it."""
    from seg_p2p.models import build_member

    batch = batch or cfg.train.batch_size
    key = json.dumps([cfg.model_dump(mode="json", include={"data", "train", "members", "reference"}), name, batch,
                      discriminator, spec.num_classes])
    if key not in _counted:
        with torch.random.fork_rng(), torch.device(counting_device(batch, cfg.data.crop_size)):
            model = build_member(cfg, name, spec)
            if not discriminator:
                model.drop_discriminator()
        _counted[key] = step_cost(model, batch, cfg.data.crop_size, spec.num_classes,
                                  activation_scale(cfg.train.precision))
    return _counted[key]
