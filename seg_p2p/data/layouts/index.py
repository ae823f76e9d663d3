"""Index masks (CamVid-like): ROOT/<split>/NAME.png photos, ROOT/<split>annot/NAME.png single-channel class indices;
the spec's void_value marks void."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from seg_p2p.data.images import to_index
from seg_p2p.data.layouts.registry import SPLITS, Layout, register_layout


@register_layout("index", priority=50)  # before aligned, whose split folders it also has
class Index(Layout):
    description = "ROOT/<split>/NAME.png photos, ROOT/<split>annot/NAME.png index masks"

    @classmethod
    def matches(cls, root: Path) -> bool:
        return any((root / f"{split}annot").is_dir() for split in SPLITS)

    def split_folders(self, split: str) -> tuple[Path, Path]:
        return self.root / split, self.root / f"{split}annot"

    def decode_label(self, image: Image.Image, path: Path) -> tuple[np.ndarray, None]:
        return to_index(image, self.spec, path), None
