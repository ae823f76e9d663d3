"""Dataset specs: class names, label colours and void handling, and colour-label decoding.

A spec is all that differs between datasets of one layout, so a new dataset needs a small YAML
(see specs/*.yaml) rather than code. Class index = position in `classes`; void pixels become
IGNORE_INDEX in prepared masks, whatever their raw encoding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, ValidationError, model_validator

from seg_p2p.errors import UserError
from seg_p2p.settings import Strict, read_yaml
from seg_p2p.stored import read_json, rerun

IGNORE_INDEX = 255  # value of void pixels in prepared masks; ignore_index of losses and metrics
SPECS_DIR = Path(__file__).parent / "specs"
SPEC_FILE = "spec.json"  # in a prepared dataset: the spec it was decoded with
BUILTIN_SPECS = tuple(sorted(path.stem for path in SPECS_DIR.glob("*.yaml")))

OFF_PALETTE_DISTANCE = 30  # RGB units (Euclidean): farther than this from every palette colour is "off the palette"
# Share of off-palette pixels above which a colour label is refused. Facades' JPEG labels reach 0.56 (thin
# structures bleed); photos score 1.0 against the facades palette. Grey-heavy palettes (cityscapes) cannot
# tell a photo from a label by colour alone: photos score 0.3-0.9 against them.
MAX_OFF_PALETTE_SHARE = 0.75
MATCH_CHUNK = 8192  # pixels per matrix product in match_palette

Colour = Annotated[list[Annotated[int, Field(ge=0, le=255)]], Field(min_length=3, max_length=3)]


class ClassSpec(Strict):
    name: str
    colour: Colour


class DatasetSpec(Strict):
    name: str
    classes: list[ClassSpec]
    void_value: int | None = None  # raw value in index masks meaning void (camvid: 11)
    void_colours: list[Colour] = []  # colour-label colours that decode to IGNORE_INDEX
    photo_side: Literal["auto", "left", "right"] = "auto"  # which half of an aligned pix2pix file is the photo

    @model_validator(mode="after")
    def _consistent(self):
        if not 1 <= len(self.classes) < IGNORE_INDEX:
            raise ValueError(f"needs 1 to {IGNORE_INDEX - 1} classes, got {len(self.classes)}")
        if len(set(self.names)) != len(self.names):
            raise ValueError("class names repeat; give every class its own name")
        colours = [tuple(c.colour) for c in self.classes] + [tuple(c) for c in self.void_colours]
        if len(set(colours)) != len(colours):
            raise ValueError("colours repeat among classes and void_colours; "
                             "nearest-colour decoding needs distinct ones")
        if self.void_value is not None and not len(self.classes) <= self.void_value <= 255:
            raise ValueError(f"void_value {self.void_value} must be in {len(self.classes)}..255 "
                             "(values below the class count are classes)")
        return self

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def palette(self) -> np.ndarray:
        return np.array([c.colour for c in self.classes], dtype=np.uint8).reshape(-1, 3)


def prepared_spec(data_dir: Path) -> DatasetSpec:
    """The spec a prepared dataset was decoded with (its spec.json): classes, colours, void."""
    path = Path(data_dir) / SPEC_FILE
    if not path.is_file():
        raise UserError(f"{path}: missing; point --data at a dataset made by `seg-p2p prepare` (data/prepared), or run "
                        "`dvc repro prepare`")
    raw = read_json(path, rerun("prepare"))
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError:
        raise UserError(f"{path}: not a spec written by `seg-p2p prepare`; {rerun('prepare')}") from None


def colour_table(palette: np.ndarray) -> np.ndarray:
    """Class id -> RGB lookup over every uint8 value: the palette's colours, void and unknown ids black."""
    table = np.zeros((256, 3), np.uint8)
    table[:len(palette)] = palette
    return table


def load_spec(name_or_path: str) -> DatasetSpec:
    """A built-in spec by name, or a spec YAML by path."""
    path = SPECS_DIR / f"{name_or_path}.yaml" if name_or_path in BUILTIN_SPECS else Path(name_or_path)
    if not path.is_file():
        raise UserError(f"{name_or_path}: no such dataset spec; use one of {', '.join(BUILTIN_SPECS)} "
                        "or the path of a spec YAML (see seg_p2p/data/specs/)")
    try:
        return DatasetSpec.model_validate(read_yaml(path))
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        if error["type"] == "extra_forbidden":
            raise UserError(f"{path}: unknown key '{key}'; remove it or fix its spelling (valid keys: "
                            f"{', '.join(DatasetSpec.model_fields)}; per class: name, colour)") from None
        raise UserError(f"{path}: {key}: {error['msg']}; fix this value") from None


def match_palette(rgb: np.ndarray, spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray]:
    """Nearest palette colour of every pixel: (class ids, void colours -> IGNORE_INDEX; off-palette mask).

    Squared distances expand to |p|^2 - 2 p.c + |c|^2; the argmin needs only the last two terms, one
    small matrix product (exact in float32 for these integers). It runs in chunks small enough that
    OpenBLAS stays single-threaded: its spinning threads make larger products ~10x slower on a busy machine;
    only the chunk is ever in float32, so a label costs 2 bytes per pixel beyond itself, whatever its size.
    """
    colours = np.concatenate([spec.palette, np.array(spec.void_colours, dtype=np.uint8).reshape(-1, 3)])
    ids = np.concatenate([np.arange(spec.num_classes), np.full(len(spec.void_colours), IGNORE_INDEX)]).astype(np.uint8)
    centres = colours.astype(np.float32)
    weights, offsets = np.ascontiguousarray(-2 * centres.T), (centres**2).sum(axis=1)
    pixels = rgb.reshape(-1, 3)
    nearest = np.empty(len(pixels), dtype=np.uint8)
    off_palette = np.empty(len(pixels), dtype=bool)
    for start in range(0, len(pixels), MATCH_CHUNK):
        chunk = pixels[start:start + MATCH_CHUNK].astype(np.float32)
        partial = chunk @ weights
        partial += offsets
        best = partial.argmin(axis=1)
        nearest[start:start + len(chunk)] = ids[best]
        distance2 = partial[np.arange(len(chunk)), best] + np.einsum("ij,ij->i", chunk, chunk)
        off_palette[start:start + len(chunk)] = distance2 > OFF_PALETTE_DISTANCE**2
    shape = rgb.shape[:2]
    return nearest.reshape(shape), off_palette.reshape(shape)


def refuse_off_palette(off_palette: np.ndarray, spec: DatasetSpec, source: str) -> None:
    share = off_palette.mean()
    if share > MAX_OFF_PALETTE_SHARE:
        raise UserError(f"{source}: {share:.0%} of its pixels are not near any '{spec.name}' label colour; "
                        "is it a photo rather than a colour label, or is the dataset spec wrong?")


def decode_colour_labels(rgb: np.ndarray, spec: DatasetSpec, source: str) -> tuple[np.ndarray, np.ndarray]:
    """HxWx3 colour label -> HxW uint8 class ids by nearest palette colour (void colours -> IGNORE_INDEX), and the
    mask of pixels off the palette (data check counts them); refused when most of them are."""
    ids, off_palette = match_palette(rgb, spec)
    refuse_off_palette(off_palette, spec, source)
    return ids, off_palette
