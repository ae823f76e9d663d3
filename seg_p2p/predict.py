"""Per-pixel class probabilities of a trained model: the ensemblers' inputs, and the predictions evaluate scores.

For each split, in a model's `predict/` folder, all written atomically:
  {split}_pred     ragged uint8 (H, W) per image (seg_p2p.ragged): the argmax at the evaluation size (resize mode:
                   crop_size; slide mode: the photo's native size), taken from full-size probabilities;
  {split}_probs    a member's only (the ensembles' inputs; a strategy's or the reference's are read by nothing): the
                   probabilities,
                   shrunk (area) so the longer side is at most inference.max_stored_side, every class or the most
                   probable inference.stored_classes (seg_p2p.probabilities); readers grow them back to the
                   evaluation size (inference.resample).
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from seg_p2p.atomic import check_writable
from seg_p2p.checkpoint import load_weights
from seg_p2p.config import Config
from seg_p2p.device import select_device, to_device
from seg_p2p.inference import Inference, resample, stored_size
from seg_p2p.models import build_member
from seg_p2p.models.registry import no_reference
from seg_p2p.run_paths import REFERENCE
from seg_p2p.probabilities import open_probabilities
from seg_p2p.ragged import RaggedArray, open_ragged


def pred_array(predict_dir: Path, split: str, fix: str) -> RaggedArray:
    return RaggedArray(predict_dir / f"{split}_pred", fix)


@dataclass(frozen=True)
class SplitOutput:
    """Where a split's predictions go and what is stored: `store_probs` for a member (the ensembles read them)."""

    folder: Path
    split: str
    eval_sizes: list[tuple[int, int]]  # each image's evaluation size
    num_classes: int
    store_probs: bool = False


class PredictionWriter:
    """Fills one split's outputs image by image: `write(i, probs)` with (C, H, W) probabilities at eval size."""

    def __init__(self, pred, probs, stored_sizes: list[tuple[int, int]]):
        self.pred, self.probs, self.stored_sizes = pred, probs, stored_sizes

    def write(self, i: int, probs: torch.Tensor) -> None:
        self.pred[i] = probs.argmax(0).to(torch.uint8).cpu().numpy()
        if self.probs is not None:
            self.probs[i] = resample(probs[None], self.stored_sizes[i])[0]


@contextmanager
def prediction_writer(target: SplitOutput, inference: Inference) -> Iterator[PredictionWriter]:
    settings = inference.settings
    stored = [stored_size(size, settings.max_stored_side) for size in target.eval_sizes]
    with ExitStack() as stack:
        probs = None
        if target.store_probs:
            probs = stack.enter_context(open_probabilities(target.folder, target.split, target.num_classes,
                                                           settings.stored_classes, stored))
        pred = stack.enter_context(open_ragged(target.folder / f"{target.split}_pred", np.uint8, target.eval_sizes))
        yield PredictionWriter(pred, probs, stored)


@torch.no_grad()
def predict_split(predict: Callable[[dict], torch.Tensor], dataset, inference: Inference, device: torch.device,
                  target: SplitOutput, label: str) -> None:
    """Write a split's outputs; `predict(batch)` gives (N, C, h, w) probabilities, grown to each eval size."""
    loader = DataLoader(dataset, batch_size=inference.loader_batch_size())
    with prediction_writer(target, inference) as writer:
        for batch in tqdm(loader, desc=f"predict {label} {target.split}", leave=False):
            probs = predict(to_device(batch, device, False))
            for j, i in enumerate(batch["index"].tolist()):
                writer.write(i, resample(probs[j:j + 1], target.eval_sizes[i])[0])


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

    if no_reference(cfg, name, out_dir):
        return
    data = PreparedData(data_dir)
    device = select_device(cfg.train.device)
    model = load_member(cfg, name, data.spec, checkpoint, device)
    check_writable(out_dir)
    torch.manual_seed(0)  # dropout_at_test draws from it: the same checkpoint gives the same probabilities
    inference = Inference.from_config(cfg)
    for split in splits:
        dataset = SegmentationDataset(data, split, build_transform(cfg.data, cfg.inference.mode, train=False))
        names = data.names(split)
        target = SplitOutput(out_dir, split, [inference.eval_size(size) for size in data.sizes(split)],
                             data.spec.num_classes, store_probs=name != REFERENCE)  # no strategy reads the reference's
        predict_split(photo_predictor(model, inference, names), dataset, inference, device, target, name)
