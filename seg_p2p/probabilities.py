"""A member's stored class probabilities, the ensembles' inputs, in bounded space whatever the class count.

At most `inference.stored_classes` classes (the default study's 8, facades' 12, CamVid's 11): every class is kept as
computed, float16 (C, h, w) per image, so a fixed combiner's ties resolve exactly as on the full probabilities.
More classes (Cityscapes' 19, VOC's 21, ADE20K's 150): each pixel keeps its `stored_classes` most probable classes
(float16 values in `{split}_probs`, class ids in `{split}_probs_classes`), at 3 bytes a kept class instead of 2 a
class: ADE20K's 300 bytes a pixel become 36. Read back, the mass the kept classes leave is shared evenly by the
others, so every member's own argmax and its kept probabilities are exact, and max, min, mean and vote can differ
only where a combination turns on classes a member ranked below its top `stored_classes`.
Both arrays are ragged (seg_p2p.ragged): images of any size, memory-mapped.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from seg_p2p.errors import UserError
from seg_p2p.ragged import RaggedArray, files, open_ragged

VALUES, CLASSES = "{split}_probs", "{split}_probs_classes"


def kept_classes(num_classes: int, stored_classes: int) -> int:
    return min(num_classes, stored_classes)


def class_dtype(num_classes: int):
    return np.uint8 if num_classes <= 256 else np.uint16


class ProbabilityWriter:
    """`writer[i] = probs`: (C, h, w) probabilities of image i at its stored size."""

    def __init__(self, values, classes, kept: int):
        self.values, self.classes, self.kept = values, classes, kept

    def __setitem__(self, i: int, probs: torch.Tensor) -> None:
        if self.classes is None:
            self.values[i] = probs.cpu().numpy().astype(np.float16)
            return
        top = torch.topk(probs, self.kept, dim=0)
        self.values[i] = top.values.cpu().numpy().astype(np.float16)
        self.classes[i] = top.indices.cpu().numpy().astype(self.classes.data.dtype)


@contextmanager
def open_probabilities(folder: Path, split: str, num_classes: int, stored_classes: int,
                       sizes: list[tuple[int, int]]) -> Iterator[ProbabilityWriter]:
    """A writer of a split's probabilities at `sizes` (each image's stored (h, w)); the files appear once filled."""
    kept = kept_classes(num_classes, stored_classes)
    shapes = [(kept, *size) for size in sizes]
    with ExitStack() as stack:
        values = stack.enter_context(open_ragged(folder / VALUES.format(split=split), np.float16, shapes))
        classes = None
        if kept < num_classes:
            classes = stack.enter_context(open_ragged(folder / CLASSES.format(split=split), class_dtype(num_classes),
                                                      shapes))
        yield ProbabilityWriter(values, classes, kept)


def stored_bytes(num_classes: int, stored_classes: int, pixels: int) -> int:
    """Disk taken by `pixels` stored pixels of probabilities (seg-p2p plan)."""
    kept = kept_classes(num_classes, stored_classes)
    per_class = 2 + (np.dtype(class_dtype(num_classes)).itemsize if kept < num_classes else 0)
    return kept * per_class * pixels


def probability_files(folder: Path, split: str) -> list[Path]:
    """The files a split's stored probabilities may consist of (data and shapes of both arrays)."""
    return [path for name in (VALUES, CLASSES) for path in files(folder / name.format(split=split))]


class StoredProbabilities:
    """Read side: `probs[i]` is image i's (C, h, w) probabilities, float32 (a view cast once per call). `fix`: what to
    do when a file is missing or damaged (seg_p2p.stored)."""

    def __init__(self, folder: Path, split: str, num_classes: int, fix: str):
        self.values = RaggedArray(folder / VALUES.format(split=split), fix)
        kept = self.values.shapes[0][0] if self.values.shapes else num_classes
        self.classes = None
        if kept < num_classes:  # the most probable classes only: their ids beside them, item for item
            self.classes = RaggedArray(folder / CLASSES.format(split=split), fix)
            if self.classes.shapes != self.values.shapes:
                raise UserError(f"{files(folder / CLASSES.format(split=split))[1]}: its shapes differ from "
                                f"{files(folder / VALUES.format(split=split))[1].name}'s; {fix}")
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: int) -> np.ndarray:
        values = self.values[i].astype(np.float32)
        if self.classes is None:
            return values
        rest = self.num_classes - len(values)
        share = np.maximum(1.0 - values.sum(0), 0.0) / max(rest, 1)
        dense = np.broadcast_to(share, (self.num_classes, *values.shape[1:])).copy()
        np.put_along_axis(dense, self.classes[i].astype(np.int64), values, axis=0)
        return dense
