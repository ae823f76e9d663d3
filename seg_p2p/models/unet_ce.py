"""The conventional baseline: segmentation_models_pytorch U-Net trained with cross-entropy."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F

from seg_p2p.data.spec import IGNORE_INDEX
from seg_p2p.models.member import SegModel, adam_group
from seg_p2p.models.registry import register_member
from seg_p2p.settings import MemberSettings, OptimizerConfig


class UnetCEConfig(MemberSettings):
    kind: Literal["unet_ce"] = "unet_ce"
    encoder: str = "resnet34"
    encoder_weights: str | None = None  # nothing is downloaded unless a user sets e.g. "imagenet"
    optimizer: OptimizerConfig = OptimizerConfig(lr=1e-3, beta1=0.9)


class UnetCE(SegModel):
    def __init__(self, cfg: UnetCEConfig, num_classes: int):
        super().__init__()
        import segmentation_models_pytorch as smp  # smp + timm take seconds to import: only when built

        self.cfg = cfg
        self.unet = smp.Unet(cfg.encoder, encoder_weights=cfg.encoder_weights, in_channels=3, classes=num_classes)

    def forward(self, batch):
        return self.unet(batch["photo"])  # logits

    def probabilities(self, output):
        return output.float().softmax(1)

    def generator_losses(self, batch, output):
        return {"loss_ce": F.cross_entropy(output.float(), batch["mask"], ignore_index=IGNORE_INDEX)}

    def networks(self):
        return {"generator": self.unet}

    def optimizer_groups(self):
        return {"generator": [adam_group(self.unet, self.cfg.optimizer)]}


register_member("unet_ce", UnetCEConfig, lambda cfg, spec, size: UnetCE(cfg, spec.num_classes))
