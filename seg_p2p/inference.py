"""Class probabilities of a photo from a trained model, in the inference mode of config.InferenceConfig.

resize: the photo arrives resized to crop_size (data/transforms.py) and the model sees it whole. slide: the photo
arrives at its native size; crop_size windows, `stride = crop_size - overlap` apart with the last one flush with
the edge (mmsegmentation's slide_inference grid), run in batches, and each pixel's probability is the mean over the
windows that hold it. A photo smaller than a window is padded with grey (the training crops' padding) and the
padding cut off again. With flip_tta the mirrored photo runs too and the two results are averaged, which makes
the output exactly mirror-symmetric. Models are applied as `model.probabilities(model({"photo": x}))`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from seg_p2p.config import InferenceConfig
from seg_p2p.data.spec import IGNORE_INDEX
from seg_p2p.data.transforms import PAD_PHOTO
from seg_p2p.errors import UserError
from seg_p2p.models.member import SegModel

PAD_VALUE = PAD_PHOTO / 127.5 - 1  # the grey of padded training crops, in the photo's [-1, 1] range
OnWindow = Callable[[dict, object], None]  # (window batch, model output): per-window diagnostics


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start of each window along one side: stride apart, the last flush with the end, all within [0, length)."""
    count = max(math.ceil((length - window) / stride), 0) + 1
    return sorted({max(min(i * stride, length - window), 0) for i in range(count)})


def resample(probs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, h, w) probabilities at `size`: area-averaged when shrinking, bilinear when growing."""
    if tuple(probs.shape[-2:]) == tuple(size):
        return probs
    shrinking = size[0] <= probs.shape[-2] and size[1] <= probs.shape[-1]
    return F.interpolate(probs, size=size, mode="area") if shrinking else \
        F.interpolate(probs, size=size, mode="bilinear", align_corners=False)


def stored_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """Size at which a prediction of `size` keeps its probabilities: the longer side at most max_side."""
    scale = min(1.0, max_side / max(size))
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


class Inference:
    def __init__(self, settings: InferenceConfig, window: int, batch_size: int):
        self.settings, self.window, self.batch_size = settings, window, batch_size
        self.stride = window - settings.overlap

    @classmethod
    def from_config(cls, cfg) -> "Inference":
        """The run's inference: its settings, windows of the training crop size, batches of train.batch_size."""
        return cls(cfg.inference, cfg.data.crop_size, cfg.train.batch_size)

    @property
    def slide(self) -> bool:
        return self.settings.mode == "slide"

    def loader_batch_size(self) -> int:
        """Photos per DataLoader batch: slide mode takes one photo at a time (sizes differ; its windows batch)."""
        return 1 if self.slide else self.batch_size

    def eval_size(self, native: tuple[int, int]) -> tuple[int, int]:
        """Size at which a photo of `native` size is labelled and scored."""
        return tuple(native) if self.slide else (self.window, self.window)

    def inputs_per_photo(self, sizes: list[tuple[int, int]]) -> float:
        """Model inputs (crop_size photos) a photo costs, on average over photos of `sizes`: its windows in slide
        mode (a photo smaller than a window is padded to one), one in resize mode; twice that with flip TTA."""
        def windows(side: int) -> int:
            return len(window_starts(side, self.window, self.stride))

        per_photo = [windows(height) * windows(width) for height, width in sizes] if self.slide else [1]
        return sum(per_photo) / len(per_photo) * (2 if self.settings.flip_tta else 1)

    def probabilities(self, model: SegModel, photo: torch.Tensor, mask: torch.Tensor | None = None,
                      on_window: OnWindow | None = None, source: str = "a photo") -> torch.Tensor:
        """(N, C, H, W) probabilities of photos (N, 3, H, W) in [-1, 1]; `on_window` sees each unmirrored model call
        with its `mask` window (diagnostics such as SegModel.pixel_tallies); `source` names the photo in errors."""
        probs = self._one_pass(model, photo, mask, on_window, source)
        if self.settings.flip_tta:
            probs = (probs + self._one_pass(model, photo.flip(-1), None, None, source).flip(-1)) / 2
        return probs

    def _one_pass(self, model, photo, mask, on_window, source) -> torch.Tensor:
        if not self.slide:
            return self._run(model, photo, mask, on_window)
        return torch.cat([self._slide(model, photo[i:i + 1], None if mask is None else mask[i:i + 1], on_window,
                                      source) for i in range(len(photo))])

    def _run(self, model, photo, mask, on_window) -> torch.Tensor:
        batch = {"photo": photo} if mask is None else {"photo": photo, "mask": mask}
        output = model(batch)
        if on_window is not None:
            on_window(batch, output)
        return model.probabilities(output).float()

    def _slide(self, model, photo, mask, on_window, source) -> torch.Tensor:
        height, width = photo.shape[-2:]
        window = self.window
        if min(height, width) < window:
            if self.settings.pad == "none":
                raise UserError(f"{source}: {width}x{height} is smaller than the {window} px slide window and "
                                "inference.pad is none; set inference.pad: constant or use inference.mode: resize")
            pad = (0, max(window - width, 0), 0, max(window - height, 0))
            photo = F.pad(photo, pad, value=PAD_VALUE)
            mask = None if mask is None else F.pad(mask, pad, value=IGNORE_INDEX)
        boxes = [(y, x) for y in window_starts(photo.shape[-2], window, self.stride)
                 for x in window_starts(photo.shape[-1], window, self.stride)]
        total = count = None
        for start in range(0, len(boxes), self.batch_size):
            chunk = boxes[start:start + self.batch_size]
            crops = torch.cat([photo[..., y:y + window, x:x + window] for y, x in chunk])
            masks = None if mask is None else torch.cat([mask[..., y:y + window, x:x + window] for y, x in chunk])
            probs = self._run(model, crops, masks, on_window)
            if total is None:
                total = probs.new_zeros(1, probs.shape[1], *photo.shape[-2:])
                count = probs.new_zeros(1, 1, *photo.shape[-2:])
            for (y, x), window_probs in zip(chunk, probs):
                total[..., y:y + window, x:x + window] += window_probs
                count[..., y:y + window, x:x + window] += 1
        return (total / count)[..., :height, :width]
