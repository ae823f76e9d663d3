"""What every trainable model declares, so one engine trains them all (members, joint ensembles, fusion).

A model takes the batch dict and returns an output; it names its losses (keys starting with `loss_`
are summed and minimised, other keys are logged diagnostics), its optimizers (`generator`, and
`discriminator` when it has one: stepped first, as in the reference) and its class probabilities.
"""

from __future__ import annotations

import torch
from torch import nn


class SegModel(nn.Module):
    dropout_at_test = False

    def forward(self, batch: dict):
        raise NotImplementedError

    def probabilities(self, output) -> torch.Tensor:
        """(N, C, H, W) class probabilities: what predict writes and the ensemblers read."""
        raise NotImplementedError

    def generator_losses(self, batch: dict, output) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def discriminator_losses(self, batch: dict, output) -> dict[str, torch.Tensor]:
        return {}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def parameter_groups(self) -> dict[str, nn.Module]:
        """Networks by role (generator, discriminator, fusion) for parameter counts."""
        raise NotImplementedError

    def inference_network(self) -> nn.Module:
        """What runs at test time (no discriminator): used for FLOPs and timing."""
        raise NotImplementedError

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


def adam(module: nn.Module, cfg) -> torch.optim.Adam:
    return fused_adam([adam_group(module, cfg)])
