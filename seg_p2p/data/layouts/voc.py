"""Pascal VOC 2012 segmentation as downloaded (VOCtrainval_11-May-2012.tar: its VOCdevkit/VOC2012/ folder).

Photos JPEGImages/NAME.jpg, labels SegmentationClass/NAME.png: palette PNGs whose indices are the 21 class ids of
the built-in `voc` spec, 255 the void border. JPEGImages also holds the detection images, so the splits are the
lists ImageSets/Segmentation/{train,val}.txt, one name a line, read in their order; test labels are withheld.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from seg_p2p.data.images import to_index
from seg_p2p.data.layouts.registry import Layout, Pair, register_layout
from seg_p2p.errors import UserError

PHOTOS, LABELS, LISTS = Path("JPEGImages"), Path("SegmentationClass"), Path("ImageSets") / "Segmentation"


@register_layout("voc", priority=20)
class Voc(Layout):
    description = ("ROOT = VOCdevkit/VOC2012: JPEGImages/ photos, SegmentationClass/ class-index PNGs, "
                   "ImageSets/Segmentation/<split>.txt lists")
    published_spec = "voc"

    @classmethod
    def matches(cls, root: Path) -> bool:
        return all((root / folder).is_dir() for folder in (PHOTOS, LABELS, LISTS))

    def list_path(self, split: str) -> Path:
        return self.root / LISTS / f"{split}.txt"

    def missing_split_fix(self, split: str) -> str:
        return str(self.list_path(split))

    def list_split(self, split: str) -> list[Pair] | None:
        """The split's listed pairs in the list's order, or None when the split has no list."""
        listing = self.list_path(split)
        if not listing.is_file():
            return None
        names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        if not names:
            raise UserError(f"{listing}: lists no images; restore it from the VOC download or remove it")
        pairs = [Pair(name, self.root / PHOTOS / f"{name}.jpg", self.root / LABELS / f"{name}.png") for name in names]
        for pair in pairs:
            for path in (pair.photo, pair.label):
                if not path.is_file():
                    raise UserError(f"{path}: listed in {listing} but missing; restore it from the VOC download or "
                                    "remove the name from the list")
        return pairs

    def decode_label(self, image: Image.Image, path: Path) -> tuple[np.ndarray, None]:
        return to_index(image, self.spec, path), None  # palette indices are the classes, 255 the void border
