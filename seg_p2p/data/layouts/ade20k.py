"""ADE20K (the SceneParsing benchmark, ADEChallengeData2016.zip) as downloaded.

images/{training,validation}/NAME.jpg photos and annotations/{training,validation}/NAME.png single-channel masks:
0 is 'other' (none of the 150 classes) and value k is class k - 1, mmsegmentation's `reduce_zero_label`; 'other'
becomes void, ignored by losses and metrics. The built-in `ade20k` spec lists the 150 classes in that order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from seg_p2p.data.layouts.registry import Layout, register_layout
from seg_p2p.data.spec import IGNORE_INDEX
from seg_p2p.errors import UserError

NUM_CLASSES = 150
SPLIT_FOLDERS = {"train": "training", "val": "validation"}  # the test images of the benchmark come unlabelled
CLASS_LOOKUP = np.full(256, IGNORE_INDEX, dtype=np.uint8)
CLASS_LOOKUP[1:NUM_CLASSES + 1] = np.arange(NUM_CLASSES)


def to_class_ids(image: Image.Image, path: Path) -> np.ndarray:
    """HxW uint8 class ids of an annotation: value k -> class k - 1, 0 ('other') -> void."""
    if image.mode not in ("L", "P"):
        raise UserError(f"{path}: annotation has mode {image.mode}, not single-channel 8-bit; use the "
                        "annotations/ of the ADEChallengeData2016 download")
    values = np.asarray(image)
    present = np.flatnonzero(np.bincount(values.ravel(), minlength=256))
    bad = present[present > NUM_CLASSES]
    if bad.size:
        raise UserError(f"{path}: values {bad.tolist()[:5]} are not ADE20K classes 0..{NUM_CLASSES}; use the "
                        "annotations/ of the ADEChallengeData2016 download")
    return CLASS_LOOKUP[values]


@register_layout("ade20k", priority=30)
class Ade20k(Layout):
    description = ("ROOT = ADEChallengeData2016: images/<training|validation>/ photos, "
                   "annotations/<training|validation>/ index masks")
    published_spec = "ade20k"
    void = "value 0, 'other'; value k is class k-1"

    @classmethod
    def matches(cls, root: Path) -> bool:
        return any((root / part / folder).is_dir() for part in ("images", "annotations")
                   for folder in SPLIT_FOLDERS.values())

    def split_folders(self, split: str) -> tuple[Path, Path]:
        return self.root / "images" / SPLIT_FOLDERS[split], self.root / "annotations" / SPLIT_FOLDERS[split]

    def decode_label(self, image: Image.Image, path: Path) -> tuple[np.ndarray, None]:
        return to_class_ids(image, path), None
