"""What every trainable model declares, so one engine trains them all (members, joint ensembles, fusion).

A model takes the batch dict and returns an output; it names its losses (keys starting with `loss_`
are summed and minimised, other keys are logged diagnostics), its class probabilities, its networks
by role (`generator`, `discriminator`, `fusion`) and its optimizers' parameter groups (`generator`,
and `discriminator` when it has one: stepped first, as in the reference). Joint training, DDP,
parameter counts and the benchmark use these declarations, never a model's attribute names.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class SegModel(nn.Module):
    dropout_at_test = False
    input_normalisation: str | None = None  # how the model maps the [-1, 1] photo for its inputs, if it does
    supervision = ""  # what its own loss compares, e.g. "colour + L1", "cross-entropy": a row of the report's 2 x 2
    adversarial_losses: tuple[str, ...] = ()  # generator loss keys that need the discriminator (kept at any beta)

    def forward(self, batch: dict):
        raise NotImplementedError

    def probabilities(self, output) -> torch.Tensor:
        """(N, C, H, W) class probabilities: what predict writes and the ensemblers read."""
        raise NotImplementedError

    def generator_losses(self, batch: dict, output) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def discriminator_losses(self, batch: dict, output) -> dict[str, torch.Tensor]:
        return {}

    def pixel_tallies(self, batch: dict, output) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Diagnostics scored per epoch on held-out and training images: name -> (count, out of); {} for none."""
        return {}

    def networks(self) -> dict[str, nn.Module]:
        """Networks by role (generator, discriminator, fusion): parameter counts and DDP wrapping."""
        raise NotImplementedError

    def optimizer_groups(self) -> dict[str, list[dict]]:
        """Adam parameter groups per optimizer: `generator`, and `discriminator` if the model has one."""
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {name: fused_adam(groups) for name, groups in self.optimizer_groups().items()}

    def drop_discriminator(self) -> None:
        """Train without the adversarial term from now on (joint without D); no-op for a model without one."""

    def wrap_networks(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Replace each network by wrap(network), in place (DDP). Networks are this module's children."""
        for role, net in self.networks().items():
            name = next(name for name, child in self.named_children() if child is net)
            setattr(self, name, wrap(net))

    def inference_network(self) -> nn.Module:
        """What runs at test time (no discriminator): used for FLOPs and timing."""
        return self.networks()["generator"]

    def train(self, mode: bool = True):
        super().train(mode)
        if not mode and self.dropout_at_test:  # the reference keeps dropout on at test time
            for module in self.modules():
                if isinstance(module, nn.Dropout):
                    module.train()
        return self


def fused_adam(groups: list[dict]) -> torch.optim.Adam:
    """Adam over parameter groups, fused: one kernel for all tensors (on CPU 6x faster per step for
    the pix2pix generator than the per-tensor loop, benchmarks/README.md)."""
    device = groups[0]["params"][0].device.type
    return torch.optim.Adam(groups, fused=device in ("cuda", "cpu"))


def adam_group(module: nn.Module, cfg) -> dict:
    """A parameter group with a member's optimizer settings (lr, betas)."""
    return {"params": [p for p in module.parameters() if p.requires_grad], "lr": cfg.lr,
            "betas": (cfg.beta1, cfg.beta2)}
