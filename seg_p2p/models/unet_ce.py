"""The conventional baseline: segmentation_models_pytorch U-Net trained with cross-entropy."""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch.nn.functional as F

from seg_p2p.config import UnetCEConfig
from seg_p2p.data.spec import IGNORE_INDEX
from seg_p2p.models.member import SegModel, adam


class UnetCE(SegModel):
    def __init__(self, cfg: UnetCEConfig, num_classes: int):
        super().__init__()
        self.cfg = cfg
        self.generator = smp.Unet(cfg.encoder, encoder_weights=cfg.encoder_weights, in_channels=3,
                                  classes=num_classes)

    def forward(self, batch):
        return self.generator(batch["photo"])  # logits

    def probabilities(self, output):
        return output.float().softmax(1)

    def generator_losses(self, batch, output):
        return {"loss_ce": F.cross_entropy(output.float(), batch["mask"], ignore_index=IGNORE_INDEX)}

    def optimizers(self):
        return {"generator": adam(self.generator, self.cfg.optimizer)}

    def parameter_groups(self):
        return {"generator": self.generator}

    def inference_network(self):
        return self.generator
