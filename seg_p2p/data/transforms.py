"""Joint photo/mask augmentation: the pix2pix jitter for training, a plain resize for evaluation.

Photos resize bicubically (as in pix2pix); masks by centre-aligned nearest neighbour
(INTER_NEAREST_EXACT), so labels stay class ids and stay on the pixels they describe.
"""

from __future__ import annotations

import albumentations as A
import cv2

from seg_p2p.config import DataConfig


def resize(size: int) -> A.Resize:
    return A.Resize(size, size, interpolation=cv2.INTER_CUBIC, mask_interpolation=cv2.INTER_NEAREST_EXACT)


def build_transform(cfg: DataConfig, train: bool) -> A.Compose:
    """train: resize to load_size, random crop_size crop, optional horizontal flip; eval: resize to crop_size."""
    if not train:
        return A.Compose([resize(cfg.crop_size)])
    steps = [resize(cfg.load_size), A.RandomCrop(cfg.crop_size, cfg.crop_size)]
    if cfg.flip:
        steps.append(A.HorizontalFlip(p=0.5))
    return A.Compose(steps)
