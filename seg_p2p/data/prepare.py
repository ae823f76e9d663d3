"""Decode a dataset once into uint8 arrays, so training never decodes an image per step.

The cache is a folder: spec.json and, per split (train, val, test), the ragged arrays (seg_p2p.ragged)
{split}_photos (H,W,3 each) and {split}_masks (H,W each; void = IGNORE_INDEX) at every image's native size,
and {split}_names.json. Images stay at their own size because full-resolution evaluation needs them so; the
cache costs 4 bytes per pixel (camvid, 579 images of 480x360: 400 MB). It is built in a temp folder beside the
target and renamed into place (atomic_dir), so a crash leaves no half-prepared cache; memory holds a few
decoded images at a time (RawDataset.read_ahead), never a split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm import tqdm

from seg_p2p.atomic import atomic_dir, write_json
from seg_p2p.data.layouts import SPLITS, Pair
from seg_p2p.data.readers import RawDataset
from seg_p2p.data.settings import DataConfig
from seg_p2p.data.spec import SPEC_FILE, load_spec, prepared_spec
from seg_p2p.data.synthetic import generate
from seg_p2p.errors import UserError
from seg_p2p.ragged import RaggedArray, open_ragged, read_shapes
from seg_p2p.stored import read_json, rerun

VAL_SEED = 0  # fixed, so every run and every member sees the same carved val split
REPREPARE = rerun("prepare")  # what to do about a damaged cache
FILES = (SPEC_FILE, *(f"{split}_{part}" for split in SPLITS
                        for part in ("photos.npy", "photos.json", "masks.npy", "masks.json", "names.json")))


def carve_val(train: list[Pair], fraction: float, source: Path) -> tuple[list[Pair], list[Pair]]:
    """(train, val): a seeded permutation of the name-sorted train pairs picks val; test is never touched."""
    count = max(1, round(fraction * len(train)))
    if count >= len(train):
        raise UserError(f"{source}: train has {len(train)} image(s), too few to carve a val split; "
                        "add images or provide a val split")
    chosen = set(np.random.default_rng(VAL_SEED).permutation(len(train))[:count].tolist())
    return ([pair for i, pair in enumerate(train) if i not in chosen],
            [pair for i, pair in enumerate(train) if i in chosen])


def split_plan(raw: RawDataset, fraction: float) -> dict[str, list[Pair]]:
    """Pairs of train, val and test. Without val, val is carved from train; without test (pix2pix
    cityscapes ships train and val only, as the real test labels are withheld), val becomes test."""
    plan = dict(raw.splits)
    if "test" not in plan:
        plan["test"] = plan.pop("val")
    if "val" not in plan:
        plan["train"], plan["val"] = carve_val(plan["train"], fraction, raw.root)
    return {split: plan[split] for split in SPLITS}


def refuse_foreign_folder(out_dir: Path) -> None:
    """Preparing replaces out_dir whole: never let that delete a folder that is not a cache."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not (out_dir / SPEC_FILE).exists():
        raise UserError(f"{out_dir}: exists and is not a prepared dataset; choose a new or empty output folder")


def write_split(folder: Path, split: str, samples: Iterable[tuple[str, np.ndarray, np.ndarray]],
                sizes: list[tuple[int, int]]) -> None:
    """Stream samples of the given (height, width) sizes into the split's memory-mapped ragged arrays."""
    names = []
    with (open_ragged(folder / f"{split}_photos", np.uint8, [(h, w, 3) for h, w in sizes]) as photos,
          open_ragged(folder / f"{split}_masks", np.uint8, sizes) as masks):
        for i, (name, photo, mask) in enumerate(tqdm(samples, total=len(sizes), desc=split, unit="img")):
            photos[i], masks[i] = photo, mask
            names.append(name)
    write_json(folder / f"{split}_names.json", names)


def prepare(cfg: DataConfig, out_dir: Path) -> None:
    """Read (or generate) the dataset of `cfg` and write its cache to out_dir."""
    out_dir = Path(out_dir)
    if cfg.dataset == "synthetic":
        spec, raw = load_spec("synthetic"), None
        generated = generate(cfg.synthetic)
        plan = {split: list(zip([f"{split}_{i:04d}" for i in range(len(masks))], photos, masks))
                for split, (photos, masks) in generated.items()}
    else:
        if cfg.root is None:
            raise UserError(f"data.root is not set for dataset '{cfg.dataset}'; set it to the dataset folder "
                            "in params.yaml or the experiment file")
        spec = load_spec(cfg.dataset)
        raw = RawDataset(Path(cfg.root), spec, cfg.max_image_pixels)
        plan = split_plan(raw, cfg.val_fraction)
    refuse_foreign_folder(out_dir)
    with atomic_dir(out_dir) as staging:
        write_json(staging / SPEC_FILE, spec.model_dump())
        for split, items in plan.items():
            if raw is None:
                write_split(staging, split, items, [mask.shape for _, _, mask in items])
            else:
                write_split(staging, split, raw.samples(split, items), [raw.photo_size(pair) for pair in items])


class PreparedData:
    """Read side of the cache: arrays are memory-mapped, so workers share pages instead of copies. Opening it checks
    every file (headers, sizes and shapes: no pixel is read), so a damaged cache stops a command before it starts."""

    def __init__(self, out_dir: Path):
        self.root = Path(out_dir)
        missing = [name for name in FILES if not (self.root / name).is_file()]
        if missing:
            raise UserError(f"{self.root}: not a prepared dataset (missing {missing[0]}); "
                            f"run `seg-p2p prepare --out {self.root}` or `dvc repro prepare` first")
        self.spec = prepared_spec(self.root)
        for split in SPLITS:
            self._check(split)

    def _check(self, split: str) -> None:
        """A split's photos (H, W, 3), masks (H, W) and names agree, image by image."""
        photos, masks, names = self.photos(split), self.masks(split), self.names(split)
        if not all(isinstance(name, str) for name in names):
            raise UserError(f"{self._path(split, 'names.json')}: not a list of image names; {REPREPARE}")
        if [shape[:2] for shape in photos.shapes] != masks.shapes or len(names) != len(masks) or \
                any(len(shape) != 3 or shape[2] != 3 for shape in photos.shapes):
            raise UserError(f"{self._path(split, 'photos.json')}: its {len(photos)} photo shapes do not match the "
                            f"{len(masks)} masks of {split}_masks.json and the {len(names)} names of "
                            f"{split}_names.json; {REPREPARE}")

    def files(self) -> list[Path]:
        return [self.root / name for name in FILES]

    def _path(self, split: str, part: str) -> Path:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return self.root / f"{split}_{part}"

    def photos(self, split: str) -> RaggedArray:
        """Item i: photo i (H,W,3 uint8) at its native size, memory-mapped."""
        return RaggedArray(self._path(split, "photos"), REPREPARE)

    def masks(self, split: str) -> RaggedArray:
        """Item i: mask i (H,W uint8 class ids, IGNORE_INDEX for void) at its photo's size."""
        return RaggedArray(self._path(split, "masks"), REPREPARE)

    def sizes(self, split: str) -> list[tuple[int, int]]:
        """(height, width) of every image of a split, without mapping any pixels."""
        return read_shapes(self._path(split, "masks"), REPREPARE)

    def names(self, split: str) -> list[str]:
        return read_json(self._path(split, "names.json"), REPREPARE, list)
