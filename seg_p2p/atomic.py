"""Atomic writes: a file is either the old one, the new one, or absent; never half-written.

Every output of seg_p2p goes through here (temp file in the same folder, fsync, rename),
so a crash or SIGKILL at any moment leaves only complete files behind. A SIGKILL can leave a
temp file (`.NAME.PID.XXXX.tmp`, never read as output); the next write of NAME removes those
whose process is gone.
"""

import io
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from seg_p2p.errors import UserError
from seg_p2p.processes import process_gone


def _remove_if_stale(tmp: Path) -> None:
    """Remove a `.NAME.PID.XXXX.tmp` file or folder unless its writing process PID is still running."""
    pid = tmp.name[:-len(".tmp")].rsplit(".", 2)[-2]
    if pid.isdigit() and not process_gone(int(pid)):
        return  # its writer may still be running
    if tmp.is_dir() and not tmp.is_symlink():
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def remove_stale_temps(path: Path) -> None:
    """Remove the temp files and folders of `path` left beside it by a killed process."""
    prefix = f".{path.name}."
    try:
        candidates = [p for p in path.parent.iterdir() if p.name.startswith(prefix) and p.name.endswith(".tmp")]
    except OSError:
        return
    for stale in candidates:
        _remove_if_stale(stale)


def remove_stale_temps_under(folder: str | Path) -> None:
    """Remove every temp file or folder left by a killed process anywhere under `folder`."""
    try:
        candidates = sorted(Path(folder).rglob(".*.tmp"))
    except OSError:
        return
    for stale in candidates:
        if stale.exists():
            _remove_if_stale(stale)


def _cannot_write(folder: Path, exc: OSError) -> UserError:
    return UserError(f"{folder}: cannot write here ({exc.strerror or exc}); choose a writable output folder")


def check_writable(folder: str | Path) -> None:
    """Refuse, before any work, an output folder that cannot be created or written (creates nothing)."""
    folder = Path(folder).absolute()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{folder}: cannot write here ({existing} is a file, not a folder); "
                        "choose another output folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{folder}: cannot write here ({existing} is not writable); "
                        "fix its permissions or choose another output folder")


def _closed(fd: int, name: str) -> str:
    os.close(fd)
    return name


def _temp_beside(path: Path, make) -> Path:
    """A new hidden temp `.NAME.PID.XXXX.tmp` beside `path`, made by `make` (tempfile.mkstemp or mkdtemp's keywords),
    after removing the temps a killed run left there."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        return Path(make(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp"))
    except OSError as exc:
        raise _cannot_write(path.parent, exc) from exc


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temp path beside `path`; on success rename it onto `path`, on failure remove it."""
    path = Path(path)
    tmp = _temp_beside(path, lambda **where: _closed(*tempfile.mkstemp(**where)))
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"{path}: write failed ({exc.strerror or exc}); free disk space or choose another folder") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_torch(path: str | Path, obj) -> None:
    import torch  # here: prepare and the code stage write files without importing torch (1.4 s)

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """Save an array as .npy (memory-mappable with np.load(mmap_mode='r'))."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array)


@contextmanager
def open_npy(path: str | Path, dtype, shape: tuple[int, ...]):
    """Yield a writable memory-mapped .npy of `shape`; it appears at `path` only once filled."""
    with atomic_path(path) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        yield array
        array.flush()
        del array


@contextmanager
def atomic_dir(path: str | Path):
    """Yield a temp folder beside `path`; on success it replaces `path` whole."""
    import shutil

    path = Path(path)
    tmp = _temp_beside(path, tempfile.mkdtemp)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"{path}: write failed ({exc.strerror or exc}); free disk space or choose another "
                        "folder") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
