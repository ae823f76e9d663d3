"""Read a raw dataset folder, in whichever registered layout it has (seg_p2p.data.layouts), into
(name, photo, mask) samples.

Splits are train, val (optional) and test; published datasets have train and val only (their test labels are
withheld). Images are read as viewers show them (EXIF orientation applied). Every problem a user can fix is a UserError
naming the file and what to do.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np

from seg_p2p.data.layouts import Pair, detect_layout
from seg_p2p.data.settings import PIL_PIXEL_LIMIT
from seg_p2p.data.spec import DatasetSpec
from seg_p2p.errors import UserError

READ_THREADS = min(8, os.cpu_count() or 1)
READ_AHEAD = 64  # decoded samples in flight at most, so memory stays bounded ...
READ_AHEAD_PIXELS = 2**26  # ... and their photos' pixels at most (bar a single larger image): ~0.5 GB decoded


class RawDataset:
    """A dataset folder: its layout, the pairs of each split, and decoding to (name, photo, mask)."""

    def __init__(self, root: Path, spec: DatasetSpec, max_pixels: int | None = PIL_PIXEL_LIMIT, layout=None):
        """`layout`: the folder's layout class where the caller has already detected it (data check does)."""
        self.root, self.spec, self.max_pixels = Path(root), spec, max_pixels
        self.layout = (layout or detect_layout(self.root))(self.root, spec, max_pixels)
        self.format = self.layout.name
        splits = self.layout.splits
        self.splits = {split: pairs for split in splits if (pairs := self.layout.list_split(split))}
        for split in ("train", splits[-1]):  # test, or val where the layout has no test (prepare uses it as test)
            if split not in self.splits and not (split == "test" and "val" in self.splits):
                raise UserError(f"{self.root}: missing split '{split}' ({self.format} layout); "
                                f"add {self.layout.missing_split_fix(split)}")
        self.layout.inspect(self.splits)
        # split -> [colour-label pixels off the palette, all colour-label pixels], counted by samples()
        self.off_palette: dict[str, list[int]] = {}

    def read(self, pair: Pair) -> tuple[np.ndarray, np.ndarray, int | None]:
        """(photo HxWx3, mask HxW, label pixels off the palette or None for index masks) of one pair, validated."""
        return self.layout.read(pair)

    def photo_size(self, pair: Pair) -> tuple[int, int]:
        """(height, width) of a pair's photo as read (upright), from its file header without decoding."""
        return self.layout.photo_size(pair)

    def read_ahead(self, pairs: list[Pair]) -> Iterator[list[Pair]]:
        """Consecutive runs of pairs decoded together: at most READ_AHEAD pairs and READ_AHEAD_PIXELS photo pixels
        (or one larger image), so memory stays bounded whatever the images' sizes."""
        run, pixels = [], 0
        for pair in pairs:
            height, width = self.photo_size(pair)
            if run and (len(run) == READ_AHEAD or pixels + height * width > READ_AHEAD_PIXELS):
                yield run
                run, pixels = [], 0
            run.append(pair)
            pixels += height * width
        if run:
            yield run

    def samples(self, split: str, pairs: list[Pair] | None = None) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """(name, photo, mask) of every pair of a split (or of `pairs`) in order; sizes may differ between pairs.

        Decoding runs in threads (PIL and numpy release the GIL); errors surface in file order.
        """
        pairs = self.splits[split] if pairs is None else pairs
        with ThreadPoolExecutor(READ_THREADS) as pool:
            for chunk in self.read_ahead(pairs):
                for pair, (photo, mask, off_palette) in zip(chunk, pool.map(self.read, chunk)):
                    if off_palette is not None:
                        counts = self.off_palette.setdefault(split, [0, 0])
                        counts[0] += off_palette
                        counts[1] += mask.size
                    yield pair.name, photo, mask
