"""Per-pixel class probabilities of a trained model: the ensemblers' inputs, and the predictions evaluate scores.

For each split, in a model's `predict/` folder, all written atomically:
  {split}_pred     ragged uint8 (H, W) per image (seg_p2p.ragged): the argmax at the evaluation size (resize mode:
                   crop_size; slide mode: the photo's native size), taken from full-size probabilities;
  {split}_probs    ragged float16 (C, h, w) per image: the probabilities at that size, shrunk (area) so the longer
                   side is at most inference.max_stored_side; bounded disk whatever the photos' size, and readers
                   grow them back to the evaluation size (inference.resample);
  {split}_masks/   <name>.png index PNGs of the predictions.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from seg_p2p.atomic import atomic_dir, check_writable
from seg_p2p.checkpoint import load_weights
from seg_p2p.config import Config
from seg_p2p.device import select_device, to_device
from seg_p2p.inference import Inference, resample, stored_size
from seg_p2p.models import build_member
from seg_p2p.ragged import RaggedArray, open_ragged


def pred_array(predict_dir: Path, split: str, fix: str) -> RaggedArray:
    return RaggedArray(predict_dir / f"{split}_pred", fix)


class PredictionWriter:
    """Fills one split's outputs image by image: `write(i, probs)` with (C, H, W) probabilities at eval size."""

    def __init__(self, probs, pred, masks: Path, names: list[str], stored: list[tuple]):
        self.probs, self.pred, self.masks, self.names, self.stored = probs, pred, masks, names, stored

    def write(self, i: int, probs: torch.Tensor) -> None:
        pred = probs.argmax(0).to(torch.uint8).cpu().numpy()
        self.pred[i] = pred
        self.probs[i] = resample(probs[None], self.stored[i][1:])[0].cpu().numpy().astype(np.float16)
        Image.fromarray(pred).save(self.masks / f"{Path(self.names[i]).stem}.png")


@contextmanager
def prediction_writer(out_dir: Path, split: str, names: list[str], eval_sizes: list[tuple[int, int]],
                      num_classes: int, max_stored_side: int) -> Iterator[PredictionWriter]:
    stored = [(num_classes, *stored_size(size, max_stored_side)) for size in eval_sizes]
    with ExitStack() as stack:
        probs = stack.enter_context(open_ragged(out_dir / f"{split}_probs", np.float16, stored))
        pred = stack.enter_context(open_ragged(out_dir / f"{split}_pred", np.uint8, eval_sizes))
        masks = stack.enter_context(atomic_dir(out_dir / f"{split}_masks"))
        yield PredictionWriter(probs, pred, masks, names, stored)


@torch.no_grad()
def predict_split(predict: Callable[[dict], torch.Tensor], dataset, inference: Inference, device: torch.device,
                  out_dir: Path, split: str, names: list[str], eval_sizes: list[tuple[int, int]], num_classes: int,
                  label: str) -> None:
    """Write a split's outputs; `predict(batch)` gives (N, C, h, w) probabilities, grown to each eval size."""
    loader = DataLoader(dataset, batch_size=inference.loader_batch_size())
    with prediction_writer(out_dir, split, names, eval_sizes, num_classes,
                           inference.settings.max_stored_side) as writer:
        for batch in tqdm(loader, desc=f"predict {label} {split}", leave=False):
            probs = predict(to_device(batch, device, False))
            for j, i in enumerate(batch["index"].tolist()):
                writer.write(i, resample(probs[j:j + 1], eval_sizes[i])[0])


def photo_predictor(model, inference: Inference, names: list[str]) -> Callable[[dict], torch.Tensor]:
    """A photo model's probabilities of a batch in the inference mode (a slide error names the photo)."""
    model.eval()
    return lambda batch: inference.probabilities(model, batch["photo"], source=names[int(batch["index"][0])])


def load_member(cfg: Config, name: str, spec, checkpoint: Path, device: torch.device):
    """A trained member from its checkpoint, on `device`, ready to predict."""
    model = build_member(cfg, name, spec)
    load_weights(model, checkpoint, spec.palette)
    return model.to(device).eval()


def predict_member(cfg: Config, name: str, data_dir: Path, checkpoint: Path, out_dir: Path,
                   splits: list[str]) -> None:
    """`seg-p2p predict --member NAME`: the best checkpoint's probabilities for each split."""
    from seg_p2p.data.dataset import SegmentationDataset
    from seg_p2p.data.prepare import PreparedData
    from seg_p2p.data.transforms import build_transform

    data = PreparedData(data_dir)
    device = select_device(cfg.train.device)
    model = load_member(cfg, name, data.spec, checkpoint, device)
    check_writable(out_dir)
    torch.manual_seed(0)  # dropout_at_test draws from it: the same checkpoint gives the same probabilities
    inference = Inference.from_config(cfg)
    for split in splits:
        dataset = SegmentationDataset(data, split, build_transform(cfg, train=False))
        names = data.names(split)
        predict_split(photo_predictor(model, inference, names), dataset, inference, device, out_dir, split, names,
                      [inference.eval_size(size) for size in data.sizes(split)], data.spec.num_classes, name)
