"""Reading back what an earlier stage stored: every file is checked before it is used.

A missing, truncated or inconsistent file (a full disk during a stage, an interrupted copy, a file of another run)
stops the command with one line naming it and how to write it again, never with a traceback from deep inside numpy,
json or pandas. The readers here are the only ones: ragged arrays (seg_p2p.ragged), JSON, CSV and .npy files;
checkpoints are read by seg_p2p.checkpoint. An array is checked from its .npy header and the file's size alone, so
the check costs the same for a 1 kB and a 30 GB array.

`fix` is what the user should do, from `rerun` (a file a stage writes whole each time) or `retrain` (a training's
own files: rerunning its stage would resume the finished training from its checkpoint, not rewrite them).
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from seg_p2p.errors import UserError

NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def rerun(stage: str) -> str:
    """The fix for a file of `stage` (a dvc.yaml stage). `-s`: with -f alone DVC reruns every stage upstream of it
    too (prepare and every training)."""
    return f"run `dvc repro -f -s {stage}` to write it again"


def retrain(stage: str) -> str:
    """The fix for a training's own files (checkpoints, history.csv, summary.json) under its train/ folder."""
    return f"delete the training's train/ folder and run `dvc repro {stage}` to train it again"


def require(path: Path, fix: str) -> Path:
    if not Path(path).is_file():
        raise UserError(f"{path}: missing; {fix}")
    return Path(path)


def read_text(path: Path, fix: str) -> str:
    try:
        return require(path, fix).read_text()
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (damaged); {fix}") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror or exc}); {fix}") from None


def read_json(path: Path, fix: str, expect: type = dict):
    """A JSON file that must parse to an `expect` (dict or list)."""
    try:
        data = json.loads(read_text(path, fix))
    except ValueError:
        raise UserError(f"{path}: not valid JSON (truncated or damaged); {fix}") from None
    if not isinstance(data, expect):
        raise UserError(f"{path}: holds a JSON {type(data).__name__}, not the {expect.__name__} its stage writes; "
                        f"{fix}")
    return data


def read_csv(path: Path, fix: str):
    """A CSV table (a pandas DataFrame) whose rows all have the header's columns: a file cut short mid-row is refused
    (pandas would fill the missing cells with NaN)."""
    import pandas as pd

    text = read_text(path, fix)
    try:
        rows = [row for row in csv.reader(io.StringIO(text)) if row]
    except csv.Error:
        rows = []
    if not rows or any(len(row) != len(rows[0]) for row in rows):
        raise UserError(f"{path}: not a complete CSV table (truncated or damaged); {fix}")
    return pd.read_csv(io.StringIO(text))


def npy_layout(path: Path, fix: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from a .npy file's header, once its size shows it holds exactly the data the header declares."""
    require(path, fix)
    try:
        with open(path, "rb") as handle:
            read_header = NPY_HEADERS.get(np.lib.format.read_magic(handle))
            if read_header is None:
                raise ValueError("unknown .npy version")
            shape, _, dtype = read_header(handle)
            start, size = handle.tell(), os.fstat(handle.fileno()).st_size
    except (ValueError, OSError, SyntaxError):
        raise UserError(f"{path}: not a .npy array (its header is missing or damaged); {fix}") from None
    if dtype.hasobject:
        raise UserError(f"{path}: holds Python objects, not the numbers its stage writes; {fix}")
    expected = start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size != expected:
        what = "truncated" if size < expected else "longer than its header declares"
        raise UserError(f"{path}: {what} ({size:,} bytes, its header declares {expected:,}); {fix}")
    return tuple(shape), dtype


def load_npy(path: Path, fix: str) -> np.ndarray:
    """A checked .npy file, in memory."""
    npy_layout(path, fix)
    return np.load(path)
