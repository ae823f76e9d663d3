"""pix2pix in reverse (photo -> labels): U-Net generator + 70x70 PatchGAN, GAN + lambda * L1.

Without a discriminator the same class is the paper's 'L1' row (member kind `unet_l1`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from seg_p2p.config import GeneratorConfig, Pix2PixConfig, UnetL1Config
from seg_p2p.data.spec import IGNORE_INDEX
from seg_p2p.distributed import unwrap
from seg_p2p.errors import UserError
from seg_p2p.models.heads import LabelHead
from seg_p2p.models.member import SegModel, adam
from seg_p2p.models.networks import PatchDiscriminator, ResnetGenerator, UnetGenerator, init_weights


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
        if self.discriminator is None:  # unet_l1, or pix2pix with its discriminator dropped (joint-no-d)
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

    def optimizers(self):
        optimizers = {"generator": adam(self.generator, self.cfg.optimizer)}
        if self.discriminator is not None:
            optimizers["discriminator"] = adam(self.discriminator, self.cfg.optimizer)
        return optimizers

    def parameter_groups(self):
        groups = {"generator": self.generator}
        if self.discriminator is not None:
            groups["discriminator"] = self.discriminator
        return groups

    def inference_network(self):
        return self.generator
