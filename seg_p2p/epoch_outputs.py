"""What a training run leaves after each epoch besides its checkpoint: val mIoU, sample grids, history.csv."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from seg_p2p.atomic import write_bytes, write_text
from seg_p2p.device import to_device
from seg_p2p.metrics import SegmentationScorer
from seg_p2p.models.member import SegModel

SAMPLE_IMAGES = 4


@torch.no_grad()
def split_scores(model: SegModel, loader: DataLoader, device, channels_last: bool, num_classes: int) -> dict:
    """mIoU on a split, scored exactly as `evaluate` scores the test split, and the model's pixel tallies as
    ratios (SegModel.pixel_tallies: e.g. the members' diversity in a joint ensemble), in one pass."""
    model.eval()
    scorer = SegmentationScorer(num_classes)
    counts: dict[str, tuple] = {}
    for batch in loader:
        batch = to_device(batch, device, channels_last)
        output = model(batch)
        scorer.update(model.probabilities(output).argmax(1).cpu(), batch["mask"].cpu())
        for key, (hits, total) in model.pixel_tallies(batch, output).items():
            previous = counts.get(key, (0, 0))
            counts[key] = (previous[0] + hits, previous[1] + total)
    scores, _ = scorer.compute()
    ratios = {key: float(hits) / max(float(total), 1.0) for key, (hits, total) in counts.items()}
    return {"miou": scores["miou"], **ratios}


def write_samples(model: SegModel, dataset, device, palette: np.ndarray, folder: Path, epoch: int) -> Path:
    """A PNG of the first images' rows photo | truth | prediction, label maps in palette colours (void black)."""
    from PIL import Image

    batch = next(iter(DataLoader(dataset, batch_size=min(SAMPLE_IMAGES, len(dataset)))))
    batch = to_device(batch, device, False)
    model.eval()
    with torch.no_grad():
        pred = model.probabilities(model(batch)).argmax(1).cpu().numpy()
    colours = np.vstack([palette, np.zeros((256 - len(palette), 3), np.uint8)])
    photos = ((batch["photo"].float().cpu().numpy().transpose(0, 2, 3, 1) + 1) * 127.5).clip(0, 255)
    rows = [np.hstack([photo.astype(np.uint8), colours[truth], colours[guess]])
            for photo, truth, guess in zip(photos, batch["mask"].cpu().numpy(), pred)]
    buffer = io.BytesIO()
    Image.fromarray(np.vstack(rows)).save(buffer, format="PNG")
    path = folder / f"epoch_{epoch:03d}.png"
    write_bytes(path, buffer.getvalue())
    return path


def write_history(path: Path, history: list[dict]) -> None:
    columns = list(dict.fromkeys(key for row in history for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    write_text(path, text.getvalue())
