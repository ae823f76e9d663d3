"""Paired folders: ROOT/A/<split>/NAME photos and ROOT/B/<split>/NAME colour labels (pix2pix's A/B, as facades)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from seg_p2p.data.images import to_rgb
from seg_p2p.data.layouts.registry import Layout, register_layout


@register_layout("paired", priority=40)
class Paired(Layout):
    description = "ROOT/A/<split>/NAME photos, ROOT/B/<split>/NAME colour labels"

    @classmethod
    def matches(cls, root: Path) -> bool:
        return (root / "A").is_dir() and (root / "B").is_dir()

    def split_folders(self, split: str) -> tuple[Path, Path]:
        return self.root / "A" / split, self.root / "B" / split

    def decode_label(self, image: Image.Image, path: Path) -> tuple[np.ndarray, int]:
        return self.decode_colours(to_rgb(image, path), path)  # a palette PNG by its colours, like any colour label
