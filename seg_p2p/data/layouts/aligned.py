"""pix2pix aligned: ROOT/<split>/NAME.jpg holds photo and colour label side by side (facades, maps, and cityscapes
in the pix2pix format); the spec's `photo_side` says which half is the photo, or `auto` decides it per dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seg_p2p.data.images import open_image, to_rgb
from seg_p2p.data.layouts.registry import SPLITS, Layout, Pair, register_layout
from seg_p2p.data.spec import match_palette
from seg_p2p.errors import UserError

SIDE_SAMPLE_FILES = 4  # files looked at to decide which half of an aligned file is the photo


@register_layout("aligned", priority=60)  # any split folder matches: the last resort
class Aligned(Layout):
    description = "ROOT/<split>/NAME.jpg, photo and colour label side by side"

    @classmethod
    def matches(cls, root: Path) -> bool:
        return any((root / split).is_dir() for split in SPLITS)

    def split_folders(self, split: str) -> tuple[Path, Path]:
        return self.root / split, self.root / split

    def inspect(self, splits: dict[str, list[Pair]]) -> None:
        self.photo_side = self.spec.photo_side if self.spec.photo_side != "auto" else self._farther_side(splits)

    def _farther_side(self, splits: dict[str, list[Pair]]) -> str:
        """The half of aligned files farther from the label palette is the photo; decided once per dataset."""
        on_palette = {"left": 0.0, "right": 0.0}
        for pair in next(iter(splits.values()))[:SIDE_SAMPLE_FILES]:
            for side, half in zip(("left", "right"), self._halves(pair)):
                on_palette[side] += 1 - match_palette(half, self.spec)[1].mean()
        return "left" if on_palette["left"] < on_palette["right"] else "right"

    @property
    def detail(self) -> str:
        return f", photo on the {self.photo_side}"

    def _halves(self, pair: Pair) -> tuple[np.ndarray, np.ndarray]:
        image = to_rgb(open_image(pair.photo, self.max_pixels), pair.photo)
        width = image.shape[1]
        if width % 2:
            raise UserError(f"{pair.photo}: odd width {width} cannot hold two equal halves (photo | label); "
                            "use the pix2pix side-by-side format")
        return image[:, : width // 2], image[:, width // 2:]

    def read(self, pair: Pair) -> tuple[np.ndarray, np.ndarray, int | None]:
        left, right = self._halves(pair)
        photo, label = (left, right) if self.photo_side == "left" else (right, left)
        return (photo, *self.decode_colours(label, pair.label))

    def photo_size(self, pair: Pair) -> tuple[int, int]:
        height, width = super().photo_size(pair)
        return height, width // 2
