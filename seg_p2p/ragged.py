"""Arrays of differently sized items in one memory-mapped file: photos, masks and probabilities of any size.

`NAME.npy` holds every item flattened, one after another; `NAME.json` holds each item's shape. Reading maps the
file and reshapes a view per item, so nothing is read until used and no split has to fit in memory; writing
allocates the whole file from the shapes first and fills it item by item (atomically, as open_npy does).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from seg_p2p.atomic import open_npy, write_json


def offsets(shapes: list[tuple[int, ...]]) -> list[int]:
    """Where each item starts in the flat data, and (last) the total length."""
    return np.concatenate([[0], np.cumsum([int(np.prod(s)) for s in shapes])]).astype(int).tolist()


def files(path: Path) -> tuple[Path, Path]:
    """(data .npy, shapes .json) of the ragged array `path` (given without suffix)."""
    return path.with_name(f"{path.name}.npy"), path.with_name(f"{path.name}.json")


class RaggedArray:
    """Read side: `array[i]` is item i as a read-only view of the memory map."""

    def __init__(self, path: Path):
        data, shapes = files(Path(path))
        self.shapes = [tuple(shape) for shape in json.loads(shapes.read_text())]
        self.offsets = offsets(self.shapes)
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
