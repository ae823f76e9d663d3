"""The conditional GAN term shared by the adversarial members: a PatchGAN on (photo, label map) pairs and its losses.

pix2pix puts it on its colour (or one-hot) label maps, the adversarial cross-entropy member on the segmenter's
softmax (Luc et al. 2016); the real pair carries the true label map in the same form. Void pixels are blanked in
both pairs, so the discriminator never tells real from fake by where the void is.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import PositiveInt

from seg_p2p.data.spec import IGNORE_INDEX
from seg_p2p.distributed import unwrap
from seg_p2p.models.member import adam_group
from seg_p2p.models.networks import PatchDiscriminator, init_weights
from seg_p2p.settings import Strict

GanMode = Literal["vanilla", "lsgan"]


class DiscriminatorConfig(Strict):
    """70x70 PatchGAN ('basic' = n_layers 3) conditioned on the photo."""

    ndf: PositiveInt = 64
    n_layers: PositiveInt = 3
    norm: Literal["batch", "instance"] = "batch"


def build_discriminator(cfg: DiscriminatorConfig, label_channels: int) -> torch.nn.Module:
    return init_weights(PatchDiscriminator(3 + label_channels, cfg.ndf, cfg.n_layers, cfg.norm))


def pair(batch: dict, label_map: torch.Tensor) -> torch.Tensor:
    """The discriminator's input: photo and label map, void pixels blanked."""
    valid = (batch["mask"] != IGNORE_INDEX).unsqueeze(1)
    return torch.cat([batch["photo"], label_map * valid], 1)


def gan_loss(logits: torch.Tensor, real: bool, mode: GanMode) -> torch.Tensor:
    target = torch.full_like(logits, 1.0 if real else 0.0)
    if mode == "lsgan":
        return F.mse_loss(logits.float(), target.float())
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def generator_term(discriminator: torch.nn.Module, batch: dict, label_map: torch.Tensor, mode: GanMode) -> torch.Tensor:
    """The generator's GAN loss: its label map judged real. The discriminator is not updated in this step (its
    parameters get no gradient, and under DDP it runs unwrapped: no gradient sync is wanted)."""
    discriminator = unwrap(discriminator)
    discriminator.requires_grad_(False)
    try:
        return gan_loss(discriminator(pair(batch, label_map)), True, mode)
    finally:
        discriminator.requires_grad_(True)


def discriminator_terms(discriminator: torch.nn.Module, batch: dict, real_map: torch.Tensor,
                        fake_map: torch.Tensor, mode: GanMode) -> dict[str, torch.Tensor]:
    """The discriminator's loss (halved, as in the reference) on the real and the detached fake pair, and its mean
    outputs on each (sigmoid for vanilla, the raw score for LSGAN) as diagnostics."""
    real_logits = discriminator(pair(batch, real_map))
    fake_logits = discriminator(pair(batch, fake_map.detach()))

    def score(logits):
        return (logits.detach().sigmoid() if mode == "vanilla" else logits.detach()).float().mean()

    return {"loss_d": 0.5 * (gan_loss(real_logits, True, mode) + gan_loss(fake_logits, False, mode)),
            "d_real": score(real_logits), "d_fake": score(fake_logits)}


class AdversarialMember:
    """Mixin for a member kind with a discriminator (listed before its SegModel base): its networks by role, one Adam
    group each with the member's optimizer settings, and joint training without D dropping the discriminator (the
    member then trains on its supervised loss alone). The kind sets `self.discriminator` (None: it has none)."""

    adversarial_losses = ("loss_g_gan",)

    def generator_network(self) -> torch.nn.Module:
        raise NotImplementedError

    def networks(self):
        networks = {"generator": self.generator_network()}
        if self.discriminator is not None:
            networks["discriminator"] = self.discriminator
        return networks

    def optimizer_groups(self):
        return {role: [adam_group(net, self.cfg.optimizer)] for role, net in self.networks().items()}

    def drop_discriminator(self):
        self.discriminator = None
