"""`seg-p2p segment --model DIR --out OUT INPUT...`: label new photos with a trained member or strategy.

DIR is a member's folder (runs/seed{K}/members/{member}; the reference's is runs/seed{K}/reference) or a strategy's
(runs/seed{K}/ensembles/{strategy}), which finds its members beside it through the run layout. For each photo, at the
photo's own size and upright as viewers show it (EXIF orientation applied), it writes OUT/{stem}.png (class indices),
OUT/{stem}_colour.png (the dataset's palette, void black) and OUT/{stem}_overlay.png (the colours over the photo).
Every input is decoded once before the first output is written, so an unreadable one stops the run with nothing
written; then one photo at a time is in memory, each file written atomically.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from seg_p2p.atomic import check_writable, write_bytes
from seg_p2p.config import Config
from seg_p2p.data.images import IMAGE_SUFFIXES, natural_key, open_image, to_rgb
from seg_p2p.data.spec import DatasetSpec, colour_table, prepared_spec
from seg_p2p.data.transforms import build_transform, photo_tensor
from seg_p2p.device import select_device
from seg_p2p.errors import UserError
from seg_p2p.inference import Inference, resample
from seg_p2p.run_paths import REFERENCE, checkpoint

OVERLAY_ALPHA = 0.5  # weight of the label colours over the photo


def refuse_unreadable(path: Path) -> None:
    """An input that is no file to read: a link to nothing, a missing path, a device or pipe."""
    if path.is_file() or path.is_dir():
        return
    if path.is_symlink():
        raise UserError(f"{path}: a link to nothing (it points to {path.readlink()}); remove the link or restore "
                        "what it points to")
    if path.exists():
        raise UserError(f"{path}: not a regular file; name image files or folders of them")
    raise UserError(f"{path}: no such file or folder; check the path")


def list_inputs(inputs: list[str], max_pixels: int | None) -> list[Path]:
    """Image files named directly or found in named folders (not recursive), each readable, each once; two files
    of one stem would write the same outputs, so they are refused. An image name in a folder that cannot be read
    (a link to nothing) is refused too, never skipped; sub-folders and other files are not inputs."""
    photos: list[Path] = []
    for item in map(Path, inputs):
        refuse_unreadable(item)
        if item.is_dir():
            found = sorted((p for p in item.iterdir() if not p.is_dir() and p.suffix.lower() in IMAGE_SUFFIXES
                            and not p.name.startswith(".")), key=lambda p: natural_key(p.name))
            if not found:
                raise UserError(f"{item}: holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                                "name image files or folders of them")
            for photo in found:
                refuse_unreadable(photo)
            photos += found
        else:
            photos.append(item)
    photos = list({photo.resolve(): photo for photo in photos}.values())  # a file named twice is labelled once
    seen: dict[str, Path] = {}
    for photo in photos:
        if photo.stem in seen:
            raise UserError(f"{photo}: same name as {seen[photo.stem]}; outputs are named by stem, so segment "
                            "them in two runs with different --out folders")
        seen[photo.stem] = photo
    for photo in tqdm(photos, desc="check inputs", unit="img", leave=False):
        to_rgb(open_image(photo, max_pixels), photo)  # unreadable, truncated, 16-bit, transparent, too large: refused
    return photos


def model_predictor(cfg: Config, model_dir: Path, spec: DatasetSpec, inference: Inference, device: torch.device,
                    strategies_dir: Path) -> tuple[str, Callable[[torch.Tensor], torch.Tensor]]:
    """(what DIR holds, a function photo -> probabilities), found from the run layout."""
    from seg_p2p.ensemble.strategy import SegmentRequest, combiner_kind, load_strategy, weights_path
    from seg_p2p.predict import load_member

    role, name = model_dir.parent.name, model_dir.name
    trained_alone = role == "members" or (name == REFERENCE and cfg.reference is not None)
    if trained_alone and checkpoint(model_dir / "train").is_file():
        model = load_member(cfg, name, spec, checkpoint(model_dir / "train"), device)
        return f"member {name}", lambda photo: inference.probabilities(model, photo)
    if role == "ensembles" and (model_dir.parent.parent / "members").is_dir():
        strategy = load_strategy(cfg, name, strategies_dir)
        kind = combiner_kind(strategy)
        if kind.trained and not checkpoint(model_dir / "train").is_file():
            raise UserError(f"{model_dir}: strategy '{name}' has not been trained here (no train/checkpoints/best.pt)"
                            "; run `dvc repro ensemble` first")
        job = SegmentRequest(cfg, strategy, spec, model_dir, model_dir.parent.parent / "members", device, inference)
        for member in strategy.members:
            if not weights_path(job.members_dir, member).is_file():
                raise UserError(f"{weights_path(job.members_dir, member)}: missing, and strategy '{name}' needs "
                                f"member {member}; run `dvc repro train` first")
        return f"strategy {name} ({strategy.combiner})", kind.photo_predictor(job)
    raise UserError(f"{model_dir}: holds no trained model; point --model at runs/seed<K>/members/<member> "
                    "(with train/checkpoints/best.pt), runs/seed<K>/ensembles/<strategy> or runs/seed<K>/reference")


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@torch.no_grad()
def segment(cfg: Config, model_dir: Path, inputs: list[str], out_dir: Path, data_dir: Path, strategies_dir: Path,
            mode: str | None, tta: bool) -> int:
    trained_mode = cfg.inference.mode
    settings = cfg.inference.model_copy(update={"mode": mode or trained_mode, "flip_tta": tta or cfg.inference.flip_tta})
    cfg = cfg.model_copy(update={"inference": settings})
    if settings.mode != trained_mode:
        print(f"seg-p2p: warning: the models were trained for {trained_mode} inference (inference.mode); "
              f"--mode {settings.mode} applies them at another scale", file=sys.stderr)
    spec = prepared_spec(data_dir)  # the classes and colours the model was trained on
    device = select_device(cfg.train.device)
    inference = Inference.from_config(cfg)
    label, predict = model_predictor(cfg, model_dir, spec, inference, device, strategies_dir)
    photos = list_inputs(inputs, cfg.data.max_image_pixels)
    check_writable(out_dir)
    colours = colour_table(spec.palette)
    transform = build_transform(cfg.data, cfg.inference.mode, train=False)
    torch.manual_seed(0)  # dropout_at_test draws from it: the same photo gives the same labels
    for path in tqdm(photos, desc=f"segment ({label}, {settings.mode})", unit="img"):
        photo = to_rgb(open_image(path, cfg.data.max_image_pixels), path)  # upright, as viewers show it
        model_input = transform(image=photo)["image"]
        tensor = photo_tensor(model_input)[None]
        probs = resample(predict(tensor.to(device)).float().cpu(), photo.shape[:2])  # back to the photo's size
        labels = probs[0].argmax(0).to(torch.uint8).numpy()
        colour = colours[labels]
        overlay = (OVERLAY_ALPHA * colour + (1 - OVERLAY_ALPHA) * photo).round().astype(np.uint8)
        for suffix, image in (("", labels), ("_colour", colour), ("_overlay", overlay)):
            write_bytes(out_dir / f"{path.stem}{suffix}.png", png_bytes(image))
    print(f"seg-p2p segment: {len(photos)} photo(s) labelled by {label} in {out_dir}", file=sys.stderr)
    return len(photos)
