"""The dataset layout registry: how a dataset folder is arranged, one registered `Layout` subclass per arrangement.

RawDataset, `data check` and `prepare` reach a layout only through here (as mmsegmentation's DATASETS), so a new
layout is one module holding a subclass decorated with `@register_layout("name")`, imported by
seg_p2p/data/layouts/__init__.py, plus its spec file when it is a published dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np
from PIL import Image

from seg_p2p.data.images import list_images, natural_key, open_image, to_rgb, upright_size
from seg_p2p.data.spec import BUILTIN_SPECS, DatasetSpec, decode_colour_labels, load_spec
from seg_p2p.errors import UserError

SPLITS = ("train", "val", "test")
LAYOUTS: dict[str, type[Layout]] = {}  # name -> layout, filled by register_layout


@dataclass(frozen=True)
class Pair:
    name: str
    photo: Path
    label: Path  # the same file as photo where both share one image (aligned)


class Layout:
    """One arrangement of a dataset folder, bound to a root and the spec it is read with. The defaults read a photo
    folder and a label folder per split (`split_folders`), pairing files by name; a label image becomes class ids
    through `decode_label`."""

    name: ClassVar[str]  # set by register_layout, with ...
    priority: ClassVar[int]  # ... the detection order: lower first, a published dataset's folders before generic ones
    description: ClassVar[str]  # where photos and labels lie, one line: data check prints it
    published_spec: ClassVar[str | None] = None  # the one spec (built-in name or YAML path) a published dataset takes
    void: ClassVar[str | None] = None  # how labels mark void when the layout, not the spec, decides it

    def __init__(self, root: Path, spec: DatasetSpec, max_pixels: int | None):
        self.root, self.spec, self.max_pixels = root, spec, max_pixels
        if self.published_spec and spec.num_classes != (classes := load_spec(self.published_spec).num_classes):
            raise UserError(f"{root}: the {self.name} layout decodes to {classes} classes, but spec '{spec.name}' "
                            f"has {spec.num_classes}; use {spec_words(self.published_spec)}")

    @property
    def splits(self) -> tuple[str, ...]:
        """Published datasets withhold their test labels: train and val only (prepare uses val as test)."""
        return ("train", "val") if self.published_spec else SPLITS

    @classmethod
    def matches(cls, root: Path) -> bool:
        """Whether the folder looks like this layout, from its folders alone (no file is read)."""
        raise NotImplementedError

    def split_folders(self, split: str) -> tuple[Path, Path]:
        """(photo folder, label folder) of a split."""
        raise NotImplementedError

    def missing_split_fix(self, split: str) -> str:
        """What to add when a needed split is missing."""
        return " and ".join(sorted({str(folder) for folder in self.split_folders(split)}))

    def list_files(self, folder: Path, photos: bool) -> dict[str, Path]:
        """A folder's photos (or labels) by the name that pairs them."""
        return list_images(folder)

    def partner_hint(self, name: str, path: Path, other_dir: Path) -> str:
        """Where the missing partner of `path` belongs, for the unpaired-file error."""
        return f"named {name}.* in {other_dir}"

    def list_split(self, split: str) -> list[Pair] | None:
        """The split's pairs sorted by name, or None when the split does not exist."""
        photo_dir, label_dir = self.split_folders(split)
        if not photo_dir.is_dir() and not label_dir.is_dir():
            return None
        for folder, partner in ((photo_dir, label_dir), (label_dir, photo_dir)):
            if not folder.is_dir():
                raise UserError(f"{folder}: missing, but {partner} exists; every split needs photos and labels")
        photos, labels = self.list_files(photo_dir, photos=True), self.list_files(label_dir, photos=False)
        if not photos:
            raise UserError(f"{photo_dir}: empty split (no images); add its images or remove the folder")
        for own, other, other_dir in ((photos, labels, label_dir), (labels, photos, photo_dir)):
            alone = sorted(own.keys() - other.keys(), key=natural_key)
            if alone:
                more = f" (and {len(alone) - 1} more)" if len(alone) > 1 else ""
                hint = self.partner_hint(alone[0], own[alone[0]], other_dir)
                raise UserError(f"{own[alone[0]]}: has no partner {hint}{more}; add it or remove this file")
        return [Pair(name, photos[name], labels[name]) for name in sorted(photos, key=natural_key)]

    def inspect(self, splits: dict[str, list[Pair]]) -> None:
        """Settle, once the splits are listed, what reading needs to know about the whole dataset."""

    @property
    def detail(self) -> str:
        """What inspect found, for data check's format line ('' when nothing)."""
        return ""

    def read(self, pair: Pair) -> tuple[np.ndarray, np.ndarray, int | None]:
        """(photo HxWx3, mask HxW, label pixels off the palette or None for index masks) of one pair, validated."""
        photo = to_rgb(open_image(pair.photo, self.max_pixels), pair.photo)
        label = open_image(pair.label, self.max_pixels)
        if label.size != (photo.shape[1], photo.shape[0]):
            raise UserError(f"{pair.label}: size {label.size[0]}x{label.size[1]} differs from its photo "
                            f"{pair.photo} ({photo.shape[1]}x{photo.shape[0]}); resize one of them")
        return (photo, *self.decode_label(label, pair.label))

    def decode_label(self, image: Image.Image, path: Path) -> tuple[np.ndarray, int | None]:
        """(HxW uint8 class ids, void -> IGNORE_INDEX; label pixels off the palette, None for index masks)."""
        raise NotImplementedError

    def decode_colours(self, rgb: np.ndarray, path: Path) -> tuple[np.ndarray, int]:
        """A colour label by nearest palette colour, and how many of its pixels lie off the palette."""
        mask, off_palette = decode_colour_labels(rgb, self.spec, str(path))
        return mask, int(off_palette.sum())

    def photo_size(self, pair: Pair) -> tuple[int, int]:
        """(height, width) of a pair's photo as read, from its file header."""
        return upright_size(pair.photo, self.max_pixels)


def register_layout(name: str, priority: int) -> Callable[[type[Layout]], type[Layout]]:
    """Class decorator: make a Layout subclass the layout `name`, which detection tries in `priority` order (lower
    first; the built-ins: cityscapes 10, voc 20, ade20k 30, paired 40, index 50, aligned 60)."""
    def register(layout: type[Layout]) -> type[Layout]:
        if name in LAYOUTS:
            raise ValueError(f"layout {name!r} is registered twice")
        layout.name, layout.priority = name, priority
        LAYOUTS[name] = layout
        return layout
    return register


def ordered_layouts() -> list[type[Layout]]:
    return sorted(LAYOUTS.values(), key=lambda layout: layout.priority)


def detect_layout(root: Path) -> type[Layout]:
    """The first layout, by priority, that the folder looks like."""
    if not root.is_dir():
        raise UserError(f"{root}: dataset folder not found; check the path (data.root or the `data check` argument)")
    for layout in ordered_layouts():
        if layout.matches(root):
            return layout
    layouts = "; ".join(f"{layout.name} ({layout.description})" for layout in ordered_layouts())
    raise UserError(f"{root}: matches no known dataset layout; arrange it as one of: {layouts}")


def spec_words(spec: str) -> str:
    """How messages name a published layout's spec: 'the built-in voc spec', or its path."""
    return f"the built-in {spec} spec" if spec in BUILTIN_SPECS else f"the spec {spec}"
