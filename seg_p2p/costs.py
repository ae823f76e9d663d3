"""What one training step of a model costs, counted without running it: FLOPs, weights, optimizer state, activations.

Every model is built on PyTorch's meta device (shapes, no storage, no arithmetic) and one full `engine.train_step`
runs on a batch of meta tensors under `torch.utils.flop_counter.FlopCounterMode`, as `benchmarks/train_step.py`
counts a step: forward, the discriminator's step and the generator's, 2 FLOPs per multiply-add. The tensors
autograd saves for the backward passes, counted on the way, are the step's activations. Nothing is allocated, so
the paper's unet_256 at 256 px costs a fraction of a second on a laptop; `seg-p2p plan` and the budget-matched
reference network (what its training budget is) both count here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

ADAM_STATES = 2  # Adam keeps two moments per trainable parameter


@dataclass(frozen=True)
class StepCost:
    """One train_step at `batch` images of `size` px."""

    train_flops: int  # forward and every backward of one step
    inference_flops: int  # the inference network's forward, per image
    weight_bytes: int  # parameters and buffers
    optimizer_bytes: int  # gradients and Adam's moments of the trainable parameters
    activation_bytes: int  # tensors saved for backward during the step (weights excluded), at `batch`

    @property
    def memory_bytes(self) -> int:
        """Peak memory of a training: weights, optimizer state and the step's activations."""
        return self.weight_bytes + self.optimizer_bytes + self.activation_bytes


def meta_batch(batch: int, size: int, num_classes: int) -> dict:
    return {"photo": torch.empty(batch, 3, size, size, device="meta"),
            "mask": torch.zeros(batch, size, size, dtype=torch.long, device="meta"),
            "index": torch.arange(batch, device="meta")}


def step_cost(model, batch: int, size: int, num_classes: int, activation_scale: float = 1.0) -> StepCost:
    """The cost of one train_step of `model`, built on the meta device (`with torch.device("meta")`).
    `activation_scale`: the precision's bytes per activation over fp32's (0.5 under bf16/fp16 autocast)."""
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

    data = meta_batch(batch, size, num_classes)
    with FlopCounterMode(display=False) as counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        train_step(model, data, model.optimizers(), Precision("fp32", torch.device("cpu")))
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return StepCost(
        train_flops=counter.get_total_flops(),
        inference_flops=flops_per_image(model.inference_network(), data["photo"][:1]),
        weight_bytes=sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers())),
        optimizer_bytes=trainable * (1 + ADAM_STATES),
        activation_bytes=round(sum(saved.values()) * activation_scale))


def activation_scale(precision: str) -> float:
    return 1.0 if precision == "fp32" else 0.5


def member_step_cost(cfg, name: str, spec, batch: int | None = None) -> StepCost:
    """One train_step of member `name` of the study `cfg` at its batch size (or `batch`) and crop size."""
    from seg_p2p.models import build_member

    with torch.device("meta"):
        model = build_member(cfg, name, spec)
    return step_cost(model, batch or cfg.train.batch_size, cfg.data.crop_size, spec.num_classes,
                     activation_scale(cfg.train.precision))
