"""Adversarial segmentation the way it is usually done (Luc et al. 2016): the cross-entropy U-Net of `unet_ce` plus a
PatchGAN on (photo, label map) pairs, softmax for the fake one, the one-hot truth for the real one; the segmenter
minimises cross-entropy + lambda_adv * its GAN loss (Hung et al. 2018 weight it 0.01).

With pix2pix (colour output, L1 + GAN), unet_l1 (colour, L1) and unet_ce (classes, cross-entropy) it completes the
2 x 2 of {colour + L1, cross-entropy} x {no GAN, GAN}, so the report can say what the GAN term does on each path.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from seg_p2p.data.spec import IGNORE_INDEX
from seg_p2p.models.adversarial import (AdversarialMember, DiscriminatorConfig, GanMode, build_discriminator,
                                        discriminator_terms, generator_term)
from seg_p2p.models.registry import register_member
from seg_p2p.models.unet_ce import UnetCE, UnetCEConfig


class UnetCEAdvConfig(UnetCEConfig):
    kind: Literal["unet_ce_adv"] = "unet_ce_adv"
    discriminator: DiscriminatorConfig = DiscriminatorConfig()
    gan_mode: GanMode = "vanilla"
    lambda_adv: Annotated[float, Field(ge=0)] = 0.01  # weight of the GAN term against the cross-entropy


class UnetCEAdv(AdversarialMember, UnetCE):
    def __init__(self, cfg: UnetCEAdvConfig, num_classes: int):
        super().__init__(cfg, num_classes)
        self.num_classes = num_classes
        self.discriminator = build_discriminator(cfg.discriminator, num_classes)

    def _truth(self, batch):
        """The real label map: the one-hot truth (void pixels are blanked by the pair)."""
        ids = torch.where(batch["mask"] == IGNORE_INDEX, 0, batch["mask"])
        return F.one_hot(ids, self.num_classes).permute(0, 3, 1, 2).float()

    def generator_losses(self, batch, output):
        losses = super().generator_losses(batch, output)
        if self.discriminator is not None:  # None: joint training without the discriminator
            fake = output.float().softmax(1)
            losses["loss_g_gan"] = self.cfg.lambda_adv * generator_term(self.discriminator, batch, fake,
                                                                        self.cfg.gan_mode)
        return losses

    def discriminator_losses(self, batch, output):
        if self.discriminator is None:
            return {}
        return discriminator_terms(self.discriminator, batch, self._truth(batch), output.float().softmax(1),
                                   self.cfg.gan_mode)

    def generator_network(self):
        return self.unet


register_member("unet_ce_adv", UnetCEAdvConfig, lambda cfg, spec, size: UnetCEAdv(cfg, spec.num_classes))
