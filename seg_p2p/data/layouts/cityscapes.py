"""Cityscapes as downloaded: ROOT/leftImg8bit/<split>/<city>/NAME_leftImg8bit.png photos and
ROOT/gtFine/<split>/<city>/NAME_gtFine_labelIds.png labels (other gtFine files are ignored); train and val only,
its test labels are withheld. Label ids become the 19 train ids, void -> IGNORE_INDEX.

The table is cityscapesScripts' helpers/labels.py (github.com/mcordts/cityscapesScripts): label id -> trainId,
where trainId 255 is void. License plate (id -1) never appears in labelIds files. Train ids follow the class
order of specs/cityscapes.yaml, so decoded masks use that spec's class indices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from seg_p2p.data.layouts.registry import Layout, register_layout
from seg_p2p.data.spec import IGNORE_INDEX
from seg_p2p.errors import UserError

LABELS = (  # (name, id, trainId) as in labels.py
    ("unlabeled", 0, 255), ("ego vehicle", 1, 255), ("rectification border", 2, 255), ("out of roi", 3, 255),
    ("static", 4, 255), ("dynamic", 5, 255), ("ground", 6, 255), ("road", 7, 0), ("sidewalk", 8, 1),
    ("parking", 9, 255), ("rail track", 10, 255), ("building", 11, 2), ("wall", 12, 3), ("fence", 13, 4),
    ("guard rail", 14, 255), ("bridge", 15, 255), ("tunnel", 16, 255), ("pole", 17, 5), ("polegroup", 18, 255),
    ("traffic light", 19, 6), ("traffic sign", 20, 7), ("vegetation", 21, 8), ("terrain", 22, 9), ("sky", 23, 10),
    ("person", 24, 11), ("rider", 25, 12), ("car", 26, 13), ("truck", 27, 14), ("bus", 28, 15),
    ("caravan", 29, 255), ("trailer", 30, 255), ("train", 31, 16), ("motorcycle", 32, 17), ("bicycle", 33, 18),
)
NUM_LABEL_IDS = len(LABELS)  # ids 0..33; any other value means the file is not a labelIds image
PHOTO_SUFFIX, LABEL_SUFFIX = "_leftImg8bit.png", "_gtFine_labelIds.png"
TRAIN_ID_LOOKUP = np.full(256, IGNORE_INDEX, dtype=np.uint8)
TRAIN_ID_LOOKUP[[label_id for _, label_id, _ in LABELS]] = [train_id for _, _, train_id in LABELS]


def to_train_ids(image: Image.Image, path: Path) -> np.ndarray:
    """HxW uint8 train ids of a labelIds image, refusing anything that is not one (colour, instance ids)."""
    if image.mode != "L":
        raise UserError(f"{path}: label has mode {image.mode}, not single-channel 8-bit label ids; "
                        "use the gtFine *_labelIds.png (not *_color.png or *_instanceIds.png)")
    ids = np.asarray(image)
    present = np.flatnonzero(np.bincount(ids.ravel(), minlength=256))
    bad = present[present >= NUM_LABEL_IDS]
    if bad.size:
        raise UserError(f"{path}: values {bad.tolist()[:5]} are not Cityscapes label ids 0..{NUM_LABEL_IDS - 1}; "
                        "is this a gtFine *_labelIds.png? (trainIds or other encodings are not read)")
    return TRAIN_ID_LOOKUP[ids]


def list_city_images(folder: Path, suffix: str) -> dict[str, Path]:
    """Files NAME<suffix> in the city folders of a split, by NAME (unique: it starts with the city)."""
    images: dict[str, Path] = {}
    for path in sorted(folder.glob(f"*/*{suffix}")):
        if path.is_file() and not path.name.startswith("."):
            name = path.name.removesuffix(suffix)
            if name in images:
                raise UserError(f"{path}: same name as {images[name]}; keep one file per name")
            images[name] = path
    return images


@register_layout("cityscapes", priority=10)
class Cityscapes(Layout):
    description = ("ROOT/leftImg8bit/<split>/<city>/*_leftImg8bit.png photos, "
                   "ROOT/gtFine/<split>/<city>/*_gtFine_labelIds.png label ids")
    published_spec = "cityscapes"
    void = "label ids outside the 19 train ids"

    @classmethod
    def matches(cls, root: Path) -> bool:
        return (root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir()

    def split_folders(self, split: str) -> tuple[Path, Path]:
        return self.root / "leftImg8bit" / split, self.root / "gtFine" / split

    def list_files(self, folder: Path, photos: bool) -> dict[str, Path]:
        return list_city_images(folder, PHOTO_SUFFIX if photos else LABEL_SUFFIX)

    def partner_hint(self, name: str, path: Path, other_dir: Path) -> str:
        suffix = LABEL_SUFFIX if path.name.endswith(PHOTO_SUFFIX) else PHOTO_SUFFIX
        return f"{name}{suffix} in {other_dir / path.parent.name}"

    def decode_label(self, image: Image.Image, path: Path) -> tuple[np.ndarray, None]:
        return to_train_ids(image, path), None
