"""pix2pix in reverse (photo -> labels): U-Net generator + 70x70 PatchGAN, GAN + lambda * L1.

Without a discriminator the same class is the paper's 'L1' row (member kind `unet_l1`).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, PositiveFloat, PositiveInt

from seg_p2p.data.spec import IGNORE_INDEX
from seg_p2p.errors import UserError
from seg_p2p.models.adversarial import (AdversarialMember, DiscriminatorConfig, GanMode, build_discriminator,
                                        discriminator_terms, generator_term)
from seg_p2p.models.heads import LabelHead
from seg_p2p.models.member import SegModel
from seg_p2p.models.networks import ResnetGenerator, UnetGenerator, init_weights
from seg_p2p.models.registry import register_member
from seg_p2p.settings import MemberConfig, Strict


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


class UnetL1Config(MemberConfig):
    kind: Literal["unet_l1"] = "unet_l1"
    generator: GeneratorConfig = GeneratorConfig()


class Pix2PixConfig(MemberConfig):
    kind: Literal["pix2pix"] = "pix2pix"
    generator: GeneratorConfig = GeneratorConfig()
    discriminator: DiscriminatorConfig = DiscriminatorConfig()
    gan_mode: GanMode = "vanilla"
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


class Pix2Pix(AdversarialMember, SegModel):
    """pix2pix, or (no discriminator) unet_l1."""

    def __init__(self, cfg: Pix2PixConfig | UnetL1Config, palette, image_size: int):
        super().__init__()
        self.cfg = cfg
        self.dropout_at_test = cfg.generator.dropout_at_test
        self.head = LabelHead(cfg.generator.head, palette, cfg.generator.rgb_temperature)
        self.supervision = f"{'colour' if cfg.generator.head == 'rgb' else 'one-hot'} + L1"
        self.generator = build_generator(cfg.generator, self.head, image_size)
        self.discriminator = None
        if isinstance(cfg, Pix2PixConfig):
            self.discriminator = build_discriminator(cfg.discriminator, self.head.channels)

    def forward(self, batch):
        return self.head.activate(self.generator(batch["photo"]))

    def probabilities(self, output):
        return self.head.probabilities(output)

    def generator_losses(self, batch, output):
        valid = (batch["mask"] != IGNORE_INDEX).unsqueeze(1).float()
        l1 = ((output - self.head.target(batch["mask"])).abs() * valid).sum() / (
            valid.sum().clamp(min=1) * output.shape[1])
        if self.discriminator is None:  # unet_l1, or pix2pix with its discriminator dropped (joint without D)
            return {"loss_g_l1": self.cfg.lambda_l1 * l1} if isinstance(self.cfg, Pix2PixConfig) else {"loss_l1": l1}
        return {"loss_g_gan": generator_term(self.discriminator, batch, output, self.cfg.gan_mode),
                "loss_g_l1": self.cfg.lambda_l1 * l1}

    def discriminator_losses(self, batch, output):
        if self.discriminator is None:
            return {}
        return discriminator_terms(self.discriminator, batch, self.head.target(batch["mask"]), output,
                                   self.cfg.gan_mode)

    def generator_network(self):
        return self.generator


register_member("pix2pix", Pix2PixConfig, lambda cfg, spec, size: Pix2Pix(cfg, spec.palette, size))
register_member("unet_l1", UnetL1Config, lambda cfg, spec, size: Pix2Pix(cfg, spec.palette, size))
