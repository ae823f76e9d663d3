"""Per-pixel class probabilities of a trained model: the ensemblers' inputs.

For each split: `{split}_probs.npy` float16 (N, C, H, W), memory-mappable; `{split}_pred.npy` uint8
(N, H, W) argmax; `{split}_masks/<name>.png` index-mask PNGs. All written atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from seg_p2p.atomic import atomic_dir, check_writable, open_npy, save_npy
from seg_p2p.checkpoint import load_weights
from seg_p2p.config import Config
from seg_p2p.device import select_device, to_device
from seg_p2p.models import build_member
from seg_p2p.models.member import SegModel


@torch.no_grad()
def predict_split(model: SegModel, dataset, batch_size: int, device: torch.device, out_dir: Path,
                  split: str, names: list[str], num_classes: int, label: str) -> None:
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size)
    size = dataset[0]["mask"].shape
    with open_npy(out_dir / f"{split}_probs.npy", np.float16, (len(dataset), num_classes, *size)) as probs:
        for batch in tqdm(loader, desc=f"predict {label} {split}", leave=False):
            batch = to_device(batch, device, False)
            index = batch["index"].cpu().numpy()
            probs[index] = model.probabilities(model(batch)).float().cpu().numpy().astype(np.float16)
        pred = np.asarray(probs).argmax(1).astype(np.uint8)
    save_npy(out_dir / f"{split}_pred.npy", pred)
    with atomic_dir(out_dir / f"{split}_masks") as folder:
        for name, mask in zip(names, pred):
            Image.fromarray(mask).save(folder / f"{Path(name).stem}.png")


def predict_member(cfg: Config, name: str, data_dir: Path, checkpoint: Path, out_dir: Path,
                   splits: list[str]) -> None:
    """`seg-p2p predict --member NAME`: the best checkpoint's probabilities for each split."""
    from seg_p2p.data.dataset import SegmentationDataset
    from seg_p2p.data.prepare import PreparedData
    from seg_p2p.data.transforms import build_transform

    data = PreparedData(data_dir)
    model = build_member(cfg, name, data.spec)
    load_weights(model, checkpoint, data.spec.palette)
    device = select_device(cfg.train.device)
    check_writable(out_dir)
    torch.manual_seed(0)  # dropout_at_test draws from it: the same checkpoint gives the same probabilities
    model.to(device)
    for split in splits:
        dataset = SegmentationDataset(data, split, build_transform(cfg.data, train=False))
        predict_split(model, dataset, cfg.train.batch_size, device, out_dir, split, data.names(split),
                      data.spec.num_classes, name)
