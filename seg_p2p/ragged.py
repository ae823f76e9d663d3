"""Arrays of differently sized items in one memory-mapped file: photos, masks and probabilities of any size.

`NAME.npy` holds every item flattened, one after another; `NAME.json` holds each item's shape. Reading maps the
file and reshapes a view per item, so nothing is read until used and no split has to fit in memory; writing
allocates the whole file from the shapes first and fills it item by item (atomically, as open_npy does). Opening
one checks both files first (seg_p2p.stored): shapes that parse, and data whose header and size hold exactly what
the shapes describe, so a truncated or mismatched pair is one line naming it, not an error deep inside numpy.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from seg_p2p.atomic import open_npy, write_json
from seg_p2p.errors import UserError
from seg_p2p.stored import npy_layout, read_json


def offsets(shapes: list[tuple[int, ...]]) -> list[int]:
    """Where each item starts in the flat data, and (last) the total length."""
    return np.concatenate([[0], np.cumsum([int(np.prod(s)) for s in shapes])]).astype(int).tolist()


def files(path: Path) -> tuple[Path, Path]:
    """(data .npy, shapes .json) of the ragged array `path` (given without suffix)."""
    return path.with_name(f"{path.name}.npy"), path.with_name(f"{path.name}.json")


def read_shapes(path: Path, fix: str) -> list[tuple[int, ...]]:
    """The item shapes of a ragged array (its .json file, `path` given without suffix)."""
    shapes_file = files(Path(path))[1]
    shapes = read_json(shapes_file, fix, list)
    if not all(isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape) for shape in shapes):
        raise UserError(f"{shapes_file}: not a list of item shapes (lists of sizes); {fix}")
    return [tuple(shape) for shape in shapes]


class RaggedArray:
    """Read side: `array[i]` is item i as a read-only view of the memory map. `fix`: what to do when a file is
    missing or damaged (seg_p2p.stored.rerun of the stage that writes it)."""

    def __init__(self, path: Path, fix: str):
        data, shapes = files(Path(path))
        data_shape, _ = npy_layout(data, fix)  # first: a missing pair is named by its data file
        self.shapes = read_shapes(Path(path), fix)
        self.offsets = offsets(self.shapes)
        if data_shape != (self.offsets[-1],):
            raise UserError(f"{data}: holds an array of shape {data_shape}, but {shapes.name} describes "
                            f"{len(self.shapes)} items of {self.offsets[-1]:,} values in all; {fix}")
        self.data = np.load(data, mmap_mode="r")

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.data[self.offsets[i]:self.offsets[i + 1]].reshape(self.shapes[i])

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(len(self)))


class RaggedWriter:
    """Write side, from `open_ragged`: assign item i once (`writer[i] = array`), in any order."""

    def __init__(self, data: np.ndarray, shapes: list[tuple[int, ...]]):
        self.data, self.shapes = data, shapes
        self.offsets = offsets(shapes)

    def __setitem__(self, i: int, value: np.ndarray) -> None:
        if tuple(value.shape) != self.shapes[i]:
            raise ValueError(f"item {i} has shape {tuple(value.shape)}, declared {self.shapes[i]}")
        self.data[self.offsets[i]:self.offsets[i + 1]] = value.reshape(-1)


@contextmanager
def open_ragged(path: Path, dtype, shapes: list[tuple[int, ...]]) -> Iterator[RaggedWriter]:
    """A writer for items of the given shapes; both files appear only once it is filled (shapes last, so a
    reader that finds the shapes finds the data)."""
    data_path, shapes_path = files(Path(path))
    shapes = [tuple(int(d) for d in shape) for shape in shapes]
    with open_npy(data_path, dtype, (offsets(shapes)[-1],)) as data:
        yield RaggedWriter(data, shapes)
    write_json(shapes_path, [list(shape) for shape in shapes])
