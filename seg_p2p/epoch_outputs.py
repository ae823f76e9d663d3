"""What a training run leaves after each epoch besides its checkpoint: val mIoU, sample grids, history.csv."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate

from seg_p2p.atomic import write_bytes, write_text
from seg_p2p.data.spec import colour_table
from seg_p2p.data.transforms import photo_image
from seg_p2p.device import to_device
from seg_p2p.inference import Inference, OnWindow
from seg_p2p.metrics import SegmentationScorer
from seg_p2p.models.member import SegModel

SAMPLE_IMAGES = 4


def probabilities(model: SegModel, batch: dict, inference: Inference | None, on_window: OnWindow | None = None):
    """A batch's class probabilities: through the inference mode for photo models, directly for models whose
    inputs are not photos alone (frozen stacking reads stored member probabilities; inference is None)."""
    if inference is not None:
        return inference.probabilities(model, batch["photo"], batch["mask"], on_window)
    output = model(batch)
    if on_window is not None:
        on_window(batch, output)
    return model.probabilities(output)


@torch.no_grad()
def split_scores(model: SegModel, loader: DataLoader, device, channels_last: bool, num_classes: int,
                 inference: Inference | None) -> dict:
    """mIoU on a split, scored exactly as `evaluate` scores the test split, and the model's pixel tallies as
    ratios (SegModel.pixel_tallies: e.g. the members' diversity in a joint ensemble; in slide mode summed over
    the windows), in one pass."""
    model.eval()
    scorer = SegmentationScorer(num_classes)
    counts: dict[str, tuple] = {}

    def tally(batch, output):
        for key, (hits, total) in model.pixel_tallies(batch, output).items():
            previous = counts.get(key, (0, 0))
            counts[key] = (previous[0] + hits, previous[1] + total)

    for batch in loader:
        batch = to_device(batch, device, channels_last)
        scorer.update(probabilities(model, batch, inference, tally).argmax(1).cpu(), batch["mask"].cpu())
    scores, _ = scorer.compute()
    ratios = {key: float(hits) / max(float(total), 1.0) for key, (hits, total) in counts.items()}
    return {"miou": scores["miou"], **ratios}


def write_samples(model: SegModel, dataset, device, palette: np.ndarray, folder: Path, epoch: int,
                  inference: Inference | None) -> Path:
    """A PNG of the first images' rows photo | truth | prediction, label maps in palette colours (void black);
    one image at a time, as sizes may differ (rows are padded to the widest)."""
    from PIL import Image

    colours = colour_table(palette)
    model.eval()
    rows = []
    for i in range(min(SAMPLE_IMAGES, len(dataset))):
        batch = to_device(default_collate([dataset[i]]), device, False)
        with torch.no_grad():
            pred = probabilities(model, batch, inference).argmax(1)[0].cpu().numpy()
        rows.append(np.hstack([photo_image(batch["photo"][0]), colours[batch["mask"][0].cpu().numpy()], colours[pred]]))
    width = max(row.shape[1] for row in rows)
    grid = np.vstack([np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0))) for row in rows])
    buffer = io.BytesIO()
    Image.fromarray(grid).save(buffer, format="PNG")
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
