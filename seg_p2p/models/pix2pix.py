"""pix2pix in reverse (photo -> labels): U-Net generator + 70x70 PatchGAN, GAN + lambda * L1.

Without a discriminator the same class is the paper's 'L1' row (member kind `unet_l1`).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat, PositiveInt

from seg_p2p.data.spec import IGNORE_INDEX
from seg_p2p.distributed import unwrap
from seg_p2p.errors import UserError
from seg_p2p.models.heads import LabelHead
from seg_p2p.models.member import SegModel, adam_group
from seg_p2p.models.networks import PatchDiscriminator, ResnetGenerator, UnetGenerator, init_weights
from seg_p2p.models.registry import register_member
from seg_p2p.settings import MemberSettings, Strict


class GeneratorConfig(Strict):
    """pix2pix generator (reference defaults: unet_256, ngf 64, BatchNorm, dropout 0.5)."""

    arch: Literal["unet", "resnet_9blocks"] = "unet"
    ngf: PositiveInt = 64
    num_downs: PositiveInt | None = None  # None: log2(crop_size), i.e. unet_256 at 256 px, unet_128 at 128 px
    norm: Literal["batch", "instance"] = "batch"
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.5
    dropout_at_test: bool = False  # the reference keeps dropout on at test time
    head: Literal["rgb", "onehot"] = "rgb"  # rgb: colour label map as in the paper; onehot: C softmax channels
    rgb_temperature: PositiveFloat = 0.05  # softmax over -squared colour distance / T gives class probabilities


class DiscriminatorConfig(Strict):
    """70x70 PatchGAN ('basic' = n_layers 3) conditioned on the photo."""

    ndf: PositiveInt = 64
    n_layers: PositiveInt = 3
    norm: Literal["batch", "instance"] = "batch"


class UnetL1Config(MemberSettings):
    kind: Literal["unet_l1"] = "unet_l1"
    generator: GeneratorConfig = GeneratorConfig()


class Pix2PixConfig(MemberSettings):
    kind: Literal["pix2pix"] = "pix2pix"
    generator: GeneratorConfig = GeneratorConfig()
    discriminator: DiscriminatorConfig = DiscriminatorConfig()
    gan_mode: Literal["vanilla", "lsgan"] = "vanilla"
    lambda_l1: Annotated[float, Field(ge=0)] = 100.0


def unet_depth(cfg: GeneratorConfig, image_size: int) -> int:
    """num_downs from the image size (256 px -> 8 = unet_256) unless set; the size must divide evenly."""
    depth = cfg.num_downs or int(math.log2(image_size))
    if image_size % 2**depth or depth < 5:
        raise UserError(f"members.*.generator.num_downs: a {depth}-level U-Net needs crop_size divisible by "
                        f"{2**depth} (got {image_size}); set data.crop_size to a power of two >= 32 or num_downs")
    return depth


def build_generator(cfg: GeneratorConfig, head: LabelHead, image_size: int):
    if cfg.arch == "unet":
        net = UnetGenerator(3, head.channels, unet_depth(cfg, image_size), cfg.ngf, cfg.norm, cfg.dropout,
                            head.final_activation())
    else:
        net = ResnetGenerator(3, head.channels, cfg.ngf, cfg.norm, cfg.dropout,
                              final_activation=head.final_activation())
    return init_weights(net)


class Pix2Pix(SegModel):
    adversarial_losses = ("loss_g_gan",)

    def __init__(self, cfg: Pix2PixConfig | UnetL1Config, palette, image_size: int):
        super().__init__()
        self.cfg = cfg
        self.dropout_at_test = cfg.generator.dropout_at_test
        self.head = LabelHead(cfg.generator.head, palette, cfg.generator.rgb_temperature)
        self.generator = build_generator(cfg.generator, self.head, image_size)
        self.discriminator = None
        if isinstance(cfg, Pix2PixConfig):
            d = cfg.discriminator
            self.discriminator = init_weights(PatchDiscriminator(3 + self.head.channels, d.ndf, d.n_layers, d.norm))

    def forward(self, batch):
        return self.head.activate(self.generator(batch["photo"]))

    def probabilities(self, output):
        return self.head.probabilities(output)

    def _pair(self, batch, label_map):
        """The discriminator's input: photo and label map, void pixels blanked in both real and fake."""
        valid = (batch["mask"] != IGNORE_INDEX).unsqueeze(1)
        return torch.cat([batch["photo"], label_map * valid], 1)

    def _gan_loss(self, logits, real: bool):
        target = torch.full_like(logits, 1.0 if real else 0.0)
        if self.cfg.gan_mode == "lsgan":
            return F.mse_loss(logits.float(), target.float())
        return F.binary_cross_entropy_with_logits(logits.float(), target.float())

    def generator_losses(self, batch, output):
        valid = (batch["mask"] != IGNORE_INDEX).unsqueeze(1).float()
        l1 = ((output - self.head.target(batch["mask"])).abs() * valid).sum() / (
            valid.sum().clamp(min=1) * output.shape[1])
        if self.discriminator is None:  # unet_l1, or pix2pix with its discriminator dropped (joint without D)
            return {"loss_g_l1": self.cfg.lambda_l1 * l1} if isinstance(self.cfg, Pix2PixConfig) else {"loss_l1": l1}
        discriminator = unwrap(self.discriminator)  # not updated in G's step: no DDP gradient sync wanted
        discriminator.requires_grad_(False)  # G's step must not compute D's parameter gradients
        try:
            fake_logits = discriminator(self._pair(batch, output))
        finally:
            discriminator.requires_grad_(True)
        return {"loss_g_gan": self._gan_loss(fake_logits, True), "loss_g_l1": self.cfg.lambda_l1 * l1}

    def discriminator_losses(self, batch, output):
        if self.discriminator is None:
            return {}
        real_logits = self.discriminator(self._pair(batch, self.head.target(batch["mask"])))
        fake_logits = self.discriminator(self._pair(batch, output.detach()))
        return {"loss_d": 0.5 * (self._gan_loss(real_logits, True) + self._gan_loss(fake_logits, False)),
                "d_real": self._score(real_logits.detach()), "d_fake": self._score(fake_logits.detach())}

    def _score(self, logits):
        """Mean discriminator output on [0, 1]: sigmoid for vanilla, the raw score for LSGAN."""
        return (logits.sigmoid() if self.cfg.gan_mode == "vanilla" else logits).float().mean()

    def networks(self):
        networks = {"generator": self.generator}
        if self.discriminator is not None:
            networks["discriminator"] = self.discriminator
        return networks

    def optimizer_groups(self):
        return {role: [adam_group(net, self.cfg.optimizer)] for role, net in self.networks().items()}

    def drop_discriminator(self):
        self.discriminator = None


register_member("pix2pix", Pix2PixConfig, lambda cfg, spec, size: Pix2Pix(cfg, spec.palette, size))
register_member("unet_l1", UnetL1Config, lambda cfg, spec, size: Pix2Pix(cfg, spec.palette, size))
