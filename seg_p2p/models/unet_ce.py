"""The conventional baseline: segmentation_models_pytorch U-Net trained with cross-entropy."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import PositiveFloat

from seg_p2p.data.spec import IGNORE_INDEX
from seg_p2p.models.member import SegModel, adam_group
from seg_p2p.models.registry import register_member
from seg_p2p.settings import MemberConfig, OptimizerConfig


DECODER_CHANNELS = (256, 128, 64, 32, 16)  # smp.Unet's default


class UnetCEConfig(MemberConfig):
    kind: Literal["unet_ce"] = "unet_ce"
    encoder: str = "resnet34"
    encoder_weights: str | None = None  # nothing is downloaded unless a user sets e.g. "imagenet"
    width: PositiveFloat = 1.0  # the decoder's channels, smp's DECODER_CHANNELS, times this (the reference's knob)
    optimizer: OptimizerConfig = OptimizerConfig(lr=1e-3, beta1=0.9)


class UnetCE(SegModel):
    supervision = "cross-entropy"

    def __init__(self, cfg: UnetCEConfig, num_classes: int):
        super().__init__()
        import segmentation_models_pytorch as smp  # smp + timm take seconds to import: only when built

        self.cfg = cfg
        decoder = tuple(max(1, round(channels * cfg.width)) for channels in DECODER_CHANNELS)
        self.unet = smp.Unet(cfg.encoder, encoder_weights=cfg.encoder_weights, in_channels=3, classes=num_classes,
                             decoder_channels=decoder)
        # Photos arrive in [-1, 1] (seg_p2p.data.dataset). A pretrained encoder expects the input its weights were
        # trained on: the range and mean/std smp publishes for them (for imagenet: [0, 1], then ImageNet's mean/std).
        scale, shift = torch.ones(1, 3, 1, 1), torch.zeros(1, 3, 1, 1)
        if cfg.encoder_weights:
            pre = smp.encoders.get_preprocessing_params(cfg.encoder, cfg.encoder_weights)
            low, high = pre["input_range"]
            mean, std = torch.tensor(pre["mean"]).view(1, 3, 1, 1), torch.tensor(pre["std"]).view(1, 3, 1, 1)
            # x in [-1, 1] -> low + (x + 1) / 2 * (high - low), then (that - mean) / std, as one affine map
            scale = (high - low) / 2 / std
            shift = (low + (high - low) / 2 - mean) / std
            self.input_normalisation = f"{cfg.encoder_weights}: range {pre['input_range']}, mean {pre['mean']}, " \
                                       f"std {pre['std']}"
        self.register_buffer("input_scale", scale, persistent=False)
        self.register_buffer("input_shift", shift, persistent=False)

    def forward(self, batch):
        return self.unet(batch["photo"] * self.input_scale + self.input_shift)  # logits

    def probabilities(self, output):
        return output.float().softmax(1)

    def generator_losses(self, batch, output):
        return {"loss_ce": F.cross_entropy(output.float(), batch["mask"], ignore_index=IGNORE_INDEX)}

    def networks(self):
        return {"generator": self.unet}

    def optimizer_groups(self):
        return {"generator": [adam_group(self.unet, self.cfg.optimizer)]}


register_member("unet_ce", UnetCEConfig, lambda cfg, spec, size: UnetCE(cfg, spec.num_classes))
