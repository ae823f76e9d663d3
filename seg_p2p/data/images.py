"""Image files as the dataset layouts read them: listed by name, decoded upright, checked, converted.

Every problem a user can fix is a UserError naming the file and what to do.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps

from seg_p2p.data.spec import IGNORE_INDEX, DatasetSpec
from seg_p2p.errors import UserError

# open_image applies data.max_image_pixels itself, so that a refusal names the file and the setting; PIL's own
# limit would stop the same images with a traceback, and could not be raised per dataset.
Image.MAX_IMAGE_PIXELS = None

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
UPRIGHT_SWAPPED = {5, 6, 7, 8}  # EXIF orientations that show the image turned by 90 degrees


def natural_key(name: str) -> list:
    """Sort 2 before 10, so arrays follow the dataset's own numbering."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def list_images(folder: Path) -> dict[str, Path]:
    """Image files of a folder by stem (other files are ignored)."""
    images: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
            if path.stem in images:
                raise UserError(f"{path}: same name as {images[path.stem].name}; keep one file per name")
            images[path.stem] = path
    return images


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


def upright_size(path: Path, max_pixels: int | None) -> tuple[int, int]:
    """(height, width) of an image as read (upright), from its file header without decoding: prepare sizes its
    cache from these before it reads the first pixel. The EXIF orientation comes from the base class's getexif,
    which reads the header only: PNG's own decodes the whole image to look for EXIF after the pixels."""
    try:
        with Image.open(path) as image:
            refuse_too_large(path, image.size, max_pixels)
            width, height = image.size
            if Image.Image.getexif(image).get(ExifTags.Base.Orientation) in UPRIGHT_SWAPPED:
                width, height = height, width
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise unreadable(path, exc) from None
    return height, width


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
