"""Read a raw dataset folder in any of six layouts into (name, photo, mask) samples.

Layouts (detected from the folder, splits train, val (optional), test):
  aligned     ROOT/<split>/NAME.jpg           photo and colour label side by side (pix2pix facades, cityscapes, maps)
  paired      ROOT/A/<split>/NAME, ROOT/B/<split>/NAME   photos and colour labels in parallel folders
  index       ROOT/<split>/NAME.png, ROOT/<split>annot/NAME.png   photos and single-channel class-index masks
  cityscapes  ROOT/leftImg8bit/<split>/<city>/NAME_leftImg8bit.png, ROOT/gtFine/<split>/<city>/NAME_gtFine_labelIds.png
              the official download; train and val only (its test labels are withheld)
  voc         ROOT/JPEGImages/NAME.jpg, ROOT/SegmentationClass/NAME.png, ROOT/ImageSets/Segmentation/<split>.txt
              Pascal VOC 2012 as downloaded (ROOT = VOCdevkit/VOC2012); train and val only
  ade20k      ROOT/images/<training|validation>/NAME.jpg, ROOT/annotations/<training|validation>/NAME.png
              ADE20K as downloaded (ROOT = ADEChallengeData2016); train and val only
Images are read as viewers show them (EXIF orientation applied). Every problem a user can fix is a UserError
naming the file and what to do.
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
from PIL import ExifTags, Image, ImageOps

from seg_p2p.data import ade20k, voc
from seg_p2p.data.cityscapes import to_train_ids
from seg_p2p.data.settings import PIL_PIXEL_LIMIT
from seg_p2p.data.spec import IGNORE_INDEX, DatasetSpec, decode_colour_labels, load_spec, match_palette
from seg_p2p.errors import UserError

# open_image applies data.max_image_pixels itself, so that a refusal names the file and the setting; PIL's own
# limit would stop the same images with a traceback, and could not be raised per dataset.
Image.MAX_IMAGE_PIXELS = None

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
LAYOUTS = {"aligned": "ROOT/<split>/NAME.jpg, photo and colour label side by side",
           "paired": "ROOT/A/<split>/NAME photos, ROOT/B/<split>/NAME colour labels",
           "index": "ROOT/<split>/NAME.png photos, ROOT/<split>annot/NAME.png index masks",
           "cityscapes": "ROOT/leftImg8bit/<split>/<city>/*_leftImg8bit.png photos, "
                         "ROOT/gtFine/<split>/<city>/*_gtFine_labelIds.png label ids",
           "voc": "ROOT = VOCdevkit/VOC2012: JPEGImages/ photos, SegmentationClass/ class-index PNGs, "
                  "ImageSets/Segmentation/<split>.txt lists",
           "ade20k": "ROOT = ADEChallengeData2016: images/<training|validation>/ photos, "
                     "annotations/<training|validation>/ index masks"}
# Layouts of one published dataset, whose label encoding is fixed: read with the built-in spec of the same name.
PUBLISHED_LAYOUTS = ("cityscapes", "voc", "ade20k")
# They read train and val only: their test labels are withheld (prepare uses val as test).
LAYOUT_SPLITS = dict.fromkeys(PUBLISHED_LAYOUTS, ("train", "val"))
CITYSCAPES_SUFFIXES = ("_leftImg8bit.png", "_gtFine_labelIds.png")  # photo, label; other gtFine files are ignored
LAYOUT_HELP = "; ".join(f"{fmt} ({text})" for fmt, text in LAYOUTS.items())
SIDE_SAMPLE_FILES = 4  # files looked at to decide which half of an aligned file is the photo
READ_THREADS = min(8, os.cpu_count() or 1)
READ_AHEAD = 64  # decoded samples in flight at most, so memory stays bounded ...
READ_AHEAD_PIXELS = 2**26  # ... and their photos' pixels at most (bar a single larger image): ~0.5 GB decoded
UPRIGHT_SWAPPED = {5, 6, 7, 8}  # EXIF orientations that show the image turned by 90 degrees


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
    if (root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir():
        return "cityscapes"
    if voc.is_voc(root):
        return "voc"
    if ade20k.is_ade20k(root):
        return "ade20k"
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


def list_city_images(folder: Path, suffix: str) -> dict[str, Path]:
    """Files NAME<suffix> in the city folders of a Cityscapes split, by NAME (unique: it starts with the city)."""
    images: dict[str, Path] = {}
    for path in sorted(folder.glob(f"*/*{suffix}")):
        if path.is_file() and not path.name.startswith("."):
            name = path.name.removesuffix(suffix)
            if name in images:
                raise UserError(f"{path}: same name as {images[name]}; keep one file per name")
            images[name] = path
    return images


def partner_hint(fmt: str, name: str, path: Path, other_dir: Path) -> str:
    """Where the missing partner of `path` belongs, for the unpaired-file error."""
    if fmt != "cityscapes":
        return f"named {name}.* in {other_dir}"
    photo_suffix, label_suffix = CITYSCAPES_SUFFIXES
    suffix = label_suffix if path.name.endswith(photo_suffix) else photo_suffix
    return f"{name}{suffix} in {other_dir / path.parent.name}"


def split_folders(root: Path, fmt: str, split: str) -> tuple[Path, Path]:
    """(photo folder, label folder) of a split; the same folder for aligned files (voc's lists name its pairs)."""
    if fmt == "ade20k":
        return ade20k.split_folders(root, split)
    return {"aligned": (root / split, root / split),
            "paired": (root / "A" / split, root / "B" / split),
            "index": (root / split, root / f"{split}annot"),
            "cityscapes": (root / "leftImg8bit" / split, root / "gtFine" / split)}[fmt]


def list_split(root: Path, fmt: str, split: str) -> list[Pair] | None:
    """The split's pairs sorted by name (voc: in its list's order), or None when the split does not exist."""
    if fmt == "voc":
        listed = voc.split_pairs(root, split)
        return None if listed is None else [Pair(*item) for item in listed]
    photo_dir, label_dir = split_folders(root, fmt, split)
    if not photo_dir.is_dir() and not label_dir.is_dir():
        return None
    for folder, partner in ((photo_dir, label_dir), (label_dir, photo_dir)):
        if not folder.is_dir():
            raise UserError(f"{folder}: missing, but {partner} exists; every split needs photos and labels")
    if fmt == "cityscapes":
        photo_suffix, label_suffix = CITYSCAPES_SUFFIXES
        photos, labels = list_city_images(photo_dir, photo_suffix), list_city_images(label_dir, label_suffix)
    else:
        photos, labels = list_images(photo_dir), list_images(label_dir)
    if not photos:
        raise UserError(f"{photo_dir}: empty split (no images); add its images or remove the folder")
    for own, other, other_dir in ((photos, labels, label_dir), (labels, photos, photo_dir)):
        alone = sorted(own.keys() - other.keys(), key=natural_key)
        if alone:
            more = f" (and {len(alone) - 1} more)" if len(alone) > 1 else ""
            raise UserError(f"{own[alone[0]]}: has no partner {partner_hint(fmt, alone[0], own[alone[0]], other_dir)}"
                            f"{more}; add it or remove this file")
    return [Pair(name, photos[name], labels[name]) for name in sorted(photos, key=natural_key)]


def refuse_too_large(path: Path, size: tuple[int, int], max_pixels: int | None) -> None:
    if max_pixels is not None and size[0] * size[1] > max_pixels:
        raise UserError(f"{path}: {size[0]}x{size[1]} is {size[0] * size[1]:,} pixels, more than "
                        f"data.max_image_pixels ({max_pixels:,}); if the image is trusted, raise data.max_image_pixels "
                        "(null: no limit) in params.yaml or the experiment")


def open_image(path: Path, max_pixels: int | None) -> Image.Image:
    """Decode fully (truncation shows only on load), upright as viewers show it (EXIF orientation applied);
    refuse more than 8 bits per channel and more than max_pixels pixels (data.max_image_pixels)."""
    try:
        image = Image.open(path)
        refuse_too_large(path, image.size, max_pixels)
        raw_modes = [tile.args[0] if isinstance(tile.args, tuple) else tile.args for tile in image.tile]
        if image.mode in ("I", "F") or image.mode.startswith("I;16") or any(";16" in str(m) for m in raw_modes):
            raise UserError(f"{path}: more than 8 bits per channel; convert it to an 8-bit image")
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as exc:
        raise unreadable(path, exc) from None
    return image


def unreadable(path: Path, exc: Exception) -> UserError:
    return UserError(f"{path}: unreadable or truncated image ({exc}); re-export it or remove it and its partner")


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

    def __init__(self, root: Path, spec: DatasetSpec, max_pixels: int | None = PIL_PIXEL_LIMIT):
        self.root, self.spec, self.max_pixels = Path(root), spec, max_pixels
        self.format = detect_format(self.root)
        if self.format in PUBLISHED_LAYOUTS and spec.num_classes != (classes := load_spec(self.format).num_classes):
            raise UserError(f"{self.root}: the {self.format} layout decodes to {classes} classes, but spec "
                            f"'{spec.name}' has {spec.num_classes}; use the built-in {self.format} spec")
        splits = LAYOUT_SPLITS.get(self.format, SPLITS)
        self.splits = {split: pairs for split in splits if (pairs := list_split(self.root, self.format, split))}
        for split in ("train", splits[-1]):  # test, or val where the layout has no test (prepare uses it as test)
            if split not in self.splits and not (split == "test" and "val" in self.splits):
                folders = (voc.list_path(self.root, split) if self.format == "voc" else
                           " and ".join(sorted({str(f) for f in split_folders(self.root, self.format, split)})))
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
        image = to_rgb(open_image(pair.photo, self.max_pixels), pair.photo)
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
            photo = to_rgb(open_image(pair.photo, self.max_pixels), pair.photo)
            label = open_image(pair.label, self.max_pixels)
            if label.size != (photo.shape[1], photo.shape[0]):
                raise UserError(f"{pair.label}: size {label.size[0]}x{label.size[1]} differs from its photo "
                                f"{pair.photo} ({photo.shape[1]}x{photo.shape[0]}); resize one of them")
            if self.format in ("index", "voc"):
                return photo, to_index(label, self.spec, pair.label), None
            if self.format == "cityscapes":
                return photo, to_train_ids(label, pair.label), None
            if self.format == "ade20k":
                return photo, ade20k.to_class_ids(label, pair.label), None
            label = to_rgb(label, pair.label)  # a palette PNG by its colours, matched like any colour label
        mask, off_palette = decode_colour_labels(label, self.spec, str(pair.label))
        return photo, mask, int(off_palette.sum())

    def photo_size(self, pair: Pair) -> tuple[int, int]:
        """(height, width) of a pair's photo as read (upright), from its file header without decoding: prepare
        sizes its cache from these before it reads the first pixel. The EXIF orientation comes from the base class's
        getexif, which reads the header only: PNG's own decodes the whole image to look for EXIF after the pixels."""
        try:
            with Image.open(pair.photo) as image:
                refuse_too_large(pair.photo, image.size, self.max_pixels)
                width, height = image.size
                if Image.Image.getexif(image).get(ExifTags.Base.Orientation) in UPRIGHT_SWAPPED:
                    width, height = height, width
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise unreadable(pair.photo, exc) from None
        return (height, width // 2) if self.format == "aligned" else (height, width)

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
