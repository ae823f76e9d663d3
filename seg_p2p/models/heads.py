"""How a generator's output stands for a label map, and how it becomes class probabilities.

`rgb` is what the paper did: 3 tanh channels drawing the label map in its palette colours,
read back by nearest colour; probabilities for ensembling are a softmax over negative squared
colour distances / T. `onehot` is what the reference's maintainer recommends: C softmax channels,
L1 against the one-hot target, already probabilities.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seg_p2p.data.spec import IGNORE_INDEX


class LabelHead(nn.Module):
    def __init__(self, kind: str, palette: np.ndarray, temperature: float = 0.05):
        super().__init__()
        self.kind = kind
        self.num_classes = len(palette)
        self.temperature = temperature
        # Palette in the generator's [-1, 1] output range, (C, 3).
        self.register_buffer("palette", torch.as_tensor(palette, dtype=torch.float32) / 127.5 - 1.0,
                             persistent=False)

    @property
    def channels(self) -> int:
        return 3 if self.kind == "rgb" else self.num_classes

    def final_activation(self) -> nn.Module | None:
        """Tanh ends the rgb generator as in the reference; onehot logits get a softmax in `activate`."""
        return nn.Tanh() if self.kind == "rgb" else None

    def activate(self, raw: torch.Tensor) -> torch.Tensor:
        return raw if self.kind == "rgb" else raw.float().softmax(1)

    def target(self, mask: torch.Tensor) -> torch.Tensor:
        """Label map in output space, (N, channels, H, W); void pixels are 0 (see `valid`)."""
        valid = mask != IGNORE_INDEX
        index = torch.where(valid, mask, 0)
        if self.kind == "rgb":
            target = self.palette[index].permute(0, 3, 1, 2)
        else:
            target = F.one_hot(index, self.num_classes).permute(0, 3, 1, 2).float()
        return target * valid.unsqueeze(1)

    def probabilities(self, output: torch.Tensor) -> torch.Tensor:
        if self.kind == "onehot":
            return output
        distance = ((output.float().unsqueeze(1) - self.palette[None, :, :, None, None]) ** 2).sum(2)
        return (-distance / self.temperature).softmax(1)
