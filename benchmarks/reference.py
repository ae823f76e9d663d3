"""The reference implementation's way of training (pytorch-CycleGAN-and-pix2pix), rebuilt around seg_p2p's models.

Eager fp32 NCHW, batch 1: every step decodes an aligned photo|label JPEG from disk with PIL and applies pix2pix's
torchvision/PIL transforms (resize to load size, random crop, flip, ToTensor, Normalize), plain Adam, a D step then
a G step, and `.item()` of every loss term (the reference's logging). The same model classes run both ways, so the
benchmark measures the way of training, not the networks.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from seg_p2p.data.prepare import PreparedData
from seg_p2p.data.spec import DatasetSpec, colour_table, match_palette
from seg_p2p.models.member import SegModel

JPEG_QUALITY = 95  # what the reference's combine_A_and_B.py writes (cv2.imwrite's default)


def write_aligned_jpegs(data: PreparedData, folder: Path) -> list[Path]:
    """The training split as the reference stores datasets: photo | colour label side by side, one JPEG each."""
    folder.mkdir(parents=True, exist_ok=True)
    palette = colour_table(data.spec.palette)  # void black
    paths = []
    for i, (photo, mask) in enumerate(zip(data.photos("train"), data.masks("train"))):
        path = folder / f"{i:04d}.jpg"
        Image.fromarray(np.hstack([photo, palette[mask]])).save(path, quality=JPEG_QUALITY)
        paths.append(path)
    return paths


class ReferenceDataset(Dataset):
    """The reference's AlignedDataset + get_transform, per item: PIL decode, split A|B, one set of crop and
    flip parameters for both, torchvision Resize (bicubic) -> crop -> flip -> ToTensor -> Normalize.

    The reference feeds the colour label itself to its L1 loss; seg_p2p's models take class ids, so the
    transformed label is read back to ids by nearest palette colour (seg_p2p's match_palette), the least
    a photo -> labels user of the reference has to add.
    """

    def __init__(self, paths: list[Path], load_size: int, crop_size: int, flip: bool, spec: DatasetSpec):
        self.paths, self.load_size, self.crop_size, self.flip, self.spec = paths, load_size, crop_size, flip, spec

    def __len__(self) -> int:
        return len(self.paths)

    def transform(self, x: int, y: int, flip: bool, normalize: bool):
        from torchvision import transforms

        steps = [transforms.Resize([self.load_size, self.load_size], transforms.InterpolationMode.BICUBIC),
                 transforms.Lambda(lambda img: img.crop((x, y, x + self.crop_size, y + self.crop_size)))]
        if flip:
            steps.append(transforms.Lambda(lambda img: img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
        if normalize:
            steps += [transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]
        return transforms.Compose(steps)

    def __getitem__(self, index: int) -> dict:
        ab = Image.open(self.paths[index]).convert("RGB")
        w, h = ab.size
        a, b = ab.crop((0, 0, w // 2, h)), ab.crop((w // 2, 0, w, h))
        x = random.randint(0, max(0, self.load_size - self.crop_size))
        y = random.randint(0, max(0, self.load_size - self.crop_size))
        flip = self.flip and random.random() > 0.5
        photo = self.transform(x, y, flip, normalize=True)(a)
        label = self.transform(x, y, flip, normalize=False)(b)
        mask = torch.from_numpy(match_palette(np.asarray(label), self.spec)[0].astype(np.int64))
        return {"photo": photo, "mask": mask, "index": index}


def reference_batches(dataset: ReferenceDataset, workers: int) -> Iterator[dict]:
    while True:
        yield from DataLoader(dataset, batch_size=1, shuffle=True, num_workers=workers)


def reference_step(model: SegModel, batch: dict, optimizers: dict) -> dict[str, float]:
    """The reference's optimize_parameters + get_current_losses: forward, D step, G step, then every loss
    term read back to the host (float(loss)) for logging, each step."""
    output = model(batch)
    losses = {}
    if "discriminator" in optimizers:
        d_losses = model.discriminator_losses(batch, output)
        optimizers["discriminator"].zero_grad()
        sum(v for k, v in d_losses.items() if k.startswith("loss_")).backward()
        optimizers["discriminator"].step()
        losses.update(d_losses)
    g_losses = model.generator_losses(batch, output)
    optimizers["generator"].zero_grad()
    sum(v for k, v in g_losses.items() if k.startswith("loss_")).backward()
    optimizers["generator"].step()
    losses.update(g_losses)
    return {key: value.item() for key, value in losses.items()}


def reference_optimizers(model: SegModel, cfg) -> dict[str, torch.optim.Optimizer]:
    """The reference's torch.optim.Adam(net.parameters(), lr, betas): no fused kernels."""
    return {role: torch.optim.Adam(net.parameters(), lr=cfg.optimizer.lr, betas=(cfg.optimizer.beta1,
                                                                                 cfg.optimizer.beta2))
            for role, net in model.networks().items()}


def reference_enter() -> None:
    torch.backends.cudnn.benchmark = True  # the reference's BaseModel sets it (fixed-size inputs)
    torch.use_deterministic_algorithms(False)
