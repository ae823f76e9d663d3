"""Joint photo/mask augmentation for each inference mode (config.InferenceConfig): the training jitter, and what
evaluation does to a photo before the model sees it.

resize mode: train on the pix2pix jitter (resize to load_size, random crop); evaluate on the photo resized to
crop_size. slide mode: train on random crops of the photo at a random rescale of its native size (mmsegmentation's
recipe), padded where the photo is smaller (void labels); evaluate at the native size (inference.py slides).
Photos resize bicubically (as in pix2pix); masks by centre-aligned nearest neighbour (INTER_NEAREST_EXACT), so
labels stay class ids and stay on the pixels they describe.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import torch

from seg_p2p.data.settings import DataConfig
from seg_p2p.data.spec import IGNORE_INDEX

PAD_PHOTO = 128  # uint8 grey of padded photo pixels: ~0 in the models' [-1, 1] input range, as inference pads


def photo_tensor(photo: np.ndarray) -> torch.Tensor:
    """An (H, W, 3) uint8 photo as the models take it: (3, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(photo.transpose(2, 0, 1))).float() / 127.5 - 1


def photo_image(tensor: torch.Tensor) -> np.ndarray:
    """photo_tensor's inverse: a (3, H, W) tensor in [-1, 1] as an (H, W, 3) uint8 image."""
    return ((tensor.float().cpu().numpy().transpose(1, 2, 0) + 1) * 127.5).clip(0, 255).astype(np.uint8)


def resize(size: int) -> A.Resize:
    return A.Resize(size, size, interpolation=cv2.INTER_CUBIC, mask_interpolation=cv2.INTER_NEAREST_EXACT)


def build_transform(data: DataConfig, mode: str, train: bool) -> A.Compose:
    """The transform of a split as the models see it: the training jitter, or the evaluation geometry. `mode`: the
    inference mode (resize | slide)."""
    slide = mode == "slide"
    if not train:
        return A.Compose([] if slide else [resize(data.crop_size)])
    if slide:
        low, high = data.scale_range
        steps = [A.RandomScale((low - 1, high - 1), interpolation=cv2.INTER_CUBIC,
                               mask_interpolation=cv2.INTER_NEAREST_EXACT, p=1.0),
                 A.PadIfNeeded(data.crop_size, data.crop_size, position="top_left", border_mode=cv2.BORDER_CONSTANT,
                               fill=PAD_PHOTO, fill_mask=IGNORE_INDEX)]
    else:
        steps = [resize(data.load_size)]
    steps.append(A.RandomCrop(data.crop_size, data.crop_size))
    if data.flip:
        steps.append(A.HorizontalFlip(p=0.5))
    return A.Compose(steps)
