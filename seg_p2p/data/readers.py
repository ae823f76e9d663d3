"""Read a raw dataset folder in any of three layouts into (name, photo, mask) samples.

Layouts (detected from the folder, splits train, val (optional), test):
  aligned  ROOT/<split>/NAME.jpg           photo and colour label side by side (pix2pix facades, cityscapes, maps)
  paired   ROOT/A/<split>/NAME, ROOT/B/<split>/NAME   photos and colour labels in parallel folders
  index    ROOT/<split>/NAME.png, ROOT/<split>annot/NAME.png   photos and single-channel class-index masks
Every problem a user can fix is a UserError naming the file and what to do.
"""

from __future__ import annotations

import os
import re
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from seg_p2p.data.spec import IGNORE_INDEX, DatasetSpec, match_palette, refuse_off_palette
from seg_p2p.errors import UserError

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
LAYOUTS = {"aligned": "ROOT/<split>/NAME.jpg, photo and colour label side by side",
           "paired": "ROOT/A/<split>/NAME photos, ROOT/B/<split>/NAME colour labels",
           "index": "ROOT/<split>/NAME.png photos, ROOT/<split>annot/NAME.png index masks"}
LAYOUT_HELP = "; ".join(f"{fmt} ({text})" for fmt, text in LAYOUTS.items())
SIDE_SAMPLE_FILES = 4  # files looked at to decide which half of an aligned file is the photo
READ_THREADS = min(8, os.cpu_count() or 1)
READ_AHEAD = 64  # decoded samples in flight at most, so memory stays bounded


@dataclass(frozen=True)
class Pair:
    name: str
    photo: Path
    label: Path  # aligned: the same file as photo


def natural_key(name: str) -> list:
    """Sort 2 before 10, so arrays follow the dataset's own numbering."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def detect_format(root: Path) -> str:
    if not root.is_dir():
        raise UserError(f"{root}: dataset folder not found; check the path (data.root or the `data check` argument)")
    if (root / "A").is_dir() and (root / "B").is_dir():
        return "paired"
    if any((root / f"{split}annot").is_dir() for split in SPLITS):
        return "index"
    if any((root / split).is_dir() for split in SPLITS):
        return "aligned"
    raise UserError(f"{root}: matches no known dataset layout; arrange it as one of: {LAYOUT_HELP}")


def list_images(folder: Path) -> dict[str, Path]:
    """Image files of a folder by stem (other files are ignored)."""
    images: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
            if path.stem in images:
                raise UserError(f"{path}: same name as {images[path.stem].name}; keep one file per name")
            images[path.stem] = path
    return images


def split_folders(root: Path, fmt: str, split: str) -> tuple[Path, Path]:
    """(photo folder, label folder) of a split; the same folder for aligned files."""
    return {"aligned": (root / split, root / split),
            "paired": (root / "A" / split, root / "B" / split),
            "index": (root / split, root / f"{split}annot")}[fmt]


def list_split(root: Path, fmt: str, split: str) -> list[Pair] | None:
    """The split's pairs sorted by name, or None when the split does not exist."""
    photo_dir, label_dir = split_folders(root, fmt, split)
    if not photo_dir.is_dir() and not label_dir.is_dir():
        return None
    for folder, partner in ((photo_dir, label_dir), (label_dir, photo_dir)):
        if not folder.is_dir():
            raise UserError(f"{folder}: missing, but {partner} exists; every split needs photos and labels")
    photos, labels = list_images(photo_dir), list_images(label_dir)
    if not photos:
        raise UserError(f"{photo_dir}: empty split (no images); add its images or remove the folder")
    for own, other, other_dir in ((photos, labels, label_dir), (labels, photos, photo_dir)):
        alone = sorted(own.keys() - other.keys(), key=natural_key)
        if alone:
            more = f" (and {len(alone) - 1} more)" if len(alone) > 1 else ""
            raise UserError(f"{own[alone[0]]}: has no partner named {alone[0]}.* in {other_dir}{more}; "
                            "add it or remove this file")
    return [Pair(name, photos[name], labels[name]) for name in sorted(photos, key=natural_key)]


def open_image(path: Path) -> Image.Image:
    """Decode fully (truncation shows only on load) and refuse more than 8 bits per channel."""
    try:
        image = Image.open(path)
        raw_modes = [tile.args[0] if isinstance(tile.args, tuple) else tile.args for tile in image.tile]
        if image.mode in ("I", "F") or image.mode.startswith("I;16") or any(";16" in str(m) for m in raw_modes):
            raise UserError(f"{path}: more than 8 bits per channel; convert it to an 8-bit image")
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as exc:
        raise UserError(f"{path}: unreadable or truncated image ({exc}); "
                        "re-export it or remove it and its partner") from None
    return image


def to_rgb(image: Image.Image, path: Path) -> np.ndarray:
    """HxWx3 uint8. Grey and palette images convert safely; alpha only when fully opaque."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if "A" in image.getbands():
        if np.asarray(image.getchannel("A")).min() < 255:
            raise UserError(f"{path}: has transparent pixels; flatten it onto a background (no alpha) and retry")
    return np.asarray(image.convert("RGB"))


def to_index(image: Image.Image, spec: DatasetSpec, path: Path) -> np.ndarray:
    """HxW uint8 class ids from a single-channel (L) or palette (P: its indices are the classes) mask."""
    if image.mode not in ("L", "P"):
        raise UserError(f"{path}: index mask has mode {image.mode}; "
                        "save it as a single-channel 8-bit PNG of class indices")
    mask = np.array(image, dtype=np.uint8)
    values = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
    bad = values[(values >= spec.num_classes) & (values != spec.void_value)]
    if bad.size:
        void = f" or the void value {spec.void_value}" if spec.void_value is not None else ""
        raise UserError(f"{path}: mask values {bad.tolist()[:5]} are not classes 0..{spec.num_classes - 1}{void}; "
                        "fix the mask or set void_value in the dataset spec")
    if spec.void_value is not None:
        mask[mask == spec.void_value] = IGNORE_INDEX
    return mask


class RawDataset:
    """A dataset folder: its layout, the pairs of each split, and decoding to (name, photo, mask)."""

    def __init__(self, root: Path, spec: DatasetSpec):
        self.root, self.spec = Path(root), spec
        self.format = detect_format(self.root)
        self.splits = {split: pairs for split in SPLITS if (pairs := list_split(self.root, self.format, split))}
        for split in ("train", "test"):
            if split not in self.splits and not (split == "test" and "val" in self.splits):
                folders = " and ".join(sorted({str(f) for f in split_folders(self.root, self.format, split)}))
                raise UserError(f"{self.root}: missing split '{split}' ({self.format} layout); add {folders}")
        self.photo_side = self._photo_side() if self.format == "aligned" else None
        # split -> [colour-label pixels off the palette, all colour-label pixels], counted by samples()
        self.off_palette: dict[str, list[int]] = {}

    def _photo_side(self) -> str:
        """The half of aligned files farther from the label palette is the photo; decided once per dataset."""
        if self.spec.photo_side != "auto":
            return self.spec.photo_side
        pairs = next(iter(self.splits.values()))[:SIDE_SAMPLE_FILES]
        on_palette = {"left": 0.0, "right": 0.0}
        for pair in pairs:
            for side, half in zip(("left", "right"), self._halves(pair)):
                on_palette[side] += 1 - match_palette(half, self.spec)[1].mean()
        return "left" if on_palette["left"] < on_palette["right"] else "right"

    def _halves(self, pair: Pair) -> tuple[np.ndarray, np.ndarray]:
        image = to_rgb(open_image(pair.photo), pair.photo)
        width = image.shape[1]
        if width % 2:
            raise UserError(f"{pair.photo}: odd width {width} cannot hold two equal halves (photo | label); "
                            "use the pix2pix side-by-side format")
        return image[:, : width // 2], image[:, width // 2:]

    def read(self, pair: Pair) -> tuple[np.ndarray, np.ndarray, int | None]:
        """(photo HxWx3, mask HxW, label pixels off the palette or None for index masks) of one pair, validated."""
        if self.format == "aligned":
            left, right = self._halves(pair)
            photo, label = (left, right) if self.photo_side == "left" else (right, left)
        else:
            photo = to_rgb(open_image(pair.photo), pair.photo)
            label = open_image(pair.label)
            if label.size != (photo.shape[1], photo.shape[0]):
                raise UserError(f"{pair.label}: size {label.size[0]}x{label.size[1]} differs from its photo "
                                f"{pair.photo} ({photo.shape[1]}x{photo.shape[0]}); resize one of them")
            if self.format == "index":
                return photo, to_index(label, self.spec, pair.label), None
            label = to_rgb(label, pair.label)
        mask, off_palette = match_palette(label, self.spec)
        refuse_off_palette(off_palette, self.spec, str(pair.label))
        return photo, mask, int(off_palette.sum())

    def samples(self, split: str, pairs: list[Pair] | None = None) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """(name, photo, mask) of every pair of a split (or of `pairs`) in order, all of one size.

        Decoding runs in threads (PIL and numpy release the GIL); errors surface in file order.
        """
        pairs = self.splits[split] if pairs is None else pairs
        first = None
        with ThreadPoolExecutor(READ_THREADS) as pool:
            for start in range(0, len(pairs), READ_AHEAD):
                chunk = pairs[start:start + READ_AHEAD]
                for pair, (photo, mask, off_palette) in zip(chunk, pool.map(self.read, chunk)):
                    if first is None:
                        first = (pair.photo, photo.shape)
                    elif photo.shape != first[1]:
                        raise UserError(f"{pair.photo}: size {photo.shape[1]}x{photo.shape[0]} differs from {first[0]} "
                                        f"({first[1][1]}x{first[1][0]}); images of a split must share one size, "
                                        "resize them")
                    if off_palette is not None:
                        counts = self.off_palette.setdefault(split, [0, 0])
                        counts[0] += off_palette
                        counts[1] += mask.size
                    yield pair.name, photo, mask
