"""Pascal VOC 2012 segmentation as downloaded (VOCtrainval_11-May-2012.tar: its VOCdevkit/VOC2012/ folder).

Photos JPEGImages/NAME.jpg, labels SegmentationClass/NAME.png: palette PNGs whose indices are the 21 class ids of
the built-in `voc` spec, 255 the void border. JPEGImages also holds the detection images, so the splits are the
lists ImageSets/Segmentation/{train,val}.txt, one name a line, read in their order; test labels are withheld.
"""

from __future__ import annotations

from pathlib import Path

from seg_p2p.errors import UserError

PHOTOS, LABELS, LISTS = Path("JPEGImages"), Path("SegmentationClass"), Path("ImageSets") / "Segmentation"


def is_voc(root: Path) -> bool:
    return all((root / folder).is_dir() for folder in (PHOTOS, LABELS, LISTS))


def list_path(root: Path, split: str) -> Path:
    return root / LISTS / f"{split}.txt"


def split_pairs(root: Path, split: str) -> list[tuple[str, Path, Path]] | None:
    """(name, photo, label) of the split's listed images, or None when the split has no list."""
    listing = list_path(root, split)
    if not listing.is_file():
        return None
    names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    if not names:
        raise UserError(f"{listing}: lists no images; restore it from the VOC download or remove it")
    pairs = [(name, root / PHOTOS / f"{name}.jpg", root / LABELS / f"{name}.png") for name in names]
    for _, photo, label in pairs:
        for path in (photo, label):
            if not path.is_file():
                raise UserError(f"{path}: listed in {listing} but missing; restore it from the VOC download or "
                                "remove the name from the list")
    return pairs
