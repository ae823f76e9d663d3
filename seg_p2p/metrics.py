"""Segmentation scores, model cost, and the bootstrap that says whether a difference is real.

One scoring path for validation and evaluation: torchmetrics (`SegmentationScorer`), with per-image class tallies
kept beside the scores because the report resamples test images to put a 95% interval on every mIoU difference.
A tally is what an image's confusion matrix gives the mIoU: per class, its true positives, its pixels in the truth
and in the prediction (3 x C numbers, where the matrix is C x C: ADE20K's 150 classes keep 450 numbers, not 22,500).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from seg_p2p.data.spec import IGNORE_INDEX


def scores_from_confusion(confusion: np.ndarray | torch.Tensor, names: list[str]) -> dict:
    """mIoU, pixel and mean class accuracy of a summed (C,C) confusion, as torchmetrics computes them.

    Macro averages skip classes absent from both truth and prediction (their per-class entries are None);
    a class only predicted counts 0 in both the IoU and the class-accuracy average, as in torchmetrics.
    """
    if torch.is_tensor(confusion):
        confusion = confusion.cpu().numpy()
    conf = np.asarray(confusion, dtype=np.float64)
    if conf.shape != (len(names), len(names)):
        raise ValueError(f"confusion {conf.shape} does not match {len(names)} class names")
    tp, truth, predicted = np.diag(conf), conf.sum(1), conf.sum(0)
    present = truth + predicted > 0
    union = truth + predicted - tp
    iou = np.divide(tp, union, out=np.zeros_like(tp), where=union > 0)
    accuracy = np.divide(tp, truth, out=np.zeros_like(tp), where=truth > 0)
    total = conf.sum()
    return {
        "miou": float(iou[present].mean()) if present.any() else float("nan"),
        "pixel_accuracy": float(tp.sum() / total) if total else 0.0,
        "mean_class_accuracy": float(accuracy[present].mean()) if present.any() else 0.0,
        "per_class_iou": {n: float(v) if p else None for n, v, p in zip(names, iou, present)},
        "per_class_accuracy": {n: float(v) if p else None for n, v, p in zip(names, accuracy, present)},
    }


def class_tallies(confusion: np.ndarray) -> np.ndarray:
    """(..., 3, C) pixel counts of (..., C, C) confusions (truth x prediction): true positives, truth, predicted."""
    confusion = np.asarray(confusion)
    return np.stack([np.diagonal(confusion, axis1=-2, axis2=-1), confusion.sum(-1), confusion.sum(-2)], axis=-2)


class SegmentationScorer:
    """Streams batches into torchmetrics and keeps the per-image class tallies the report bootstraps over."""

    def __init__(self, classes: int | list[str], ignore_index: int = IGNORE_INDEX):
        """classes: the class names, or their count (then named "0", "1", ...)."""
        # torchmetrics pulls in torchvision (~5 s on 2 cores): imported by the stages that score, not by every one
        from torchmetrics import MetricCollection
        from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassJaccardIndex

        self.names = [str(i) for i in range(classes)] if isinstance(classes, int) else list(classes)
        self.ignore_index = ignore_index
        c = len(self.names)
        local = {"ignore_index": ignore_index, "sync_on_compute": False}  # one process scores the whole split
        self.metrics = MetricCollection({
            "miou": MulticlassJaccardIndex(c, average="macro", zero_division=0, **local),
            "pixel_accuracy": MulticlassAccuracy(c, average="micro", **local),
            "mean_class_accuracy": MulticlassAccuracy(c, average="macro", **local),
            "confusion": MulticlassConfusionMatrix(c, **local),
        })
        self.per_image: list[torch.Tensor] = []

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred, target: (B,H,W) class ids on the same device."""
        from torchmetrics.functional.classification import multiclass_confusion_matrix

        self._check_ids(pred, target)
        self.metrics.to(pred.device)
        # Under torch.use_deterministic_algorithms torchmetrics replaces torch.bincount by a (pixels x C^2)
        # comparison: 5 s and 1.5 GB for 4x256x256 pixels of 19 classes. bincount without weights is
        # deterministic (torch documents only the weighted CUDA case), so lift the flag for these calls.
        deterministic, warn_only = torch.are_deterministic_algorithms_enabled(), \
            torch.is_deterministic_algorithms_warn_only_enabled()
        torch.use_deterministic_algorithms(False)
        try:
            self.metrics.update(pred, target)
            self.per_image += [multiclass_confusion_matrix(p[None], t[None], len(self.names),
                                                           ignore_index=self.ignore_index, validate_args=False).cpu()
                               for p, t in zip(pred, target)]
        finally:
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)

    def _check_ids(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """torchmetrics only counts distinct values, so an id past the last class would be binned into another
        class's cell: refuse it (void pixels of the target excepted)."""
        if pred.shape != target.shape or pred.dim() != 3:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must both be (B,H,W)")
        for name, ids in (("target", target[target != self.ignore_index]), ("pred", pred)):
            if ids.numel() and (ids.min() < 0 or ids.max() >= len(self.names)):
                raise ValueError(f"{name} holds class ids outside [0, {len(self.names)})")

    def compute(self) -> tuple[dict, np.ndarray]:
        """(scores as in scores_from_confusion, per-image class tallies (N,3,C) int64)."""
        if not self.per_image:
            raise ValueError("SegmentationScorer.compute() before any update()")
        values = self.metrics.compute()
        scores = scores_from_confusion(values["confusion"], self.names)
        scores.update({key: float(values[key]) for key in ("miou", "pixel_accuracy", "mean_class_accuracy")})
        return scores, class_tallies(torch.stack(self.per_image).numpy())


def flops_per_image(module: torch.nn.Module, example: torch.Tensor) -> int:
    """Forward FLOPs (2 per multiply-add) of one image, counted in eval mode; the module's mode is restored."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(example)
    finally:
        module.train(was_training)
    return counter.get_total_flops() // example.shape[0]


def inference_ms_per_image(fn: Callable[[torch.Tensor], Any], example: torch.Tensor, repeats: int = 5,
                           warmup: int = 1) -> float:
    """Wall-clock milliseconds per image of fn(example), after warmup calls; waits for CUDA work to finish."""
    def sync():
        if example.is_cuda:
            torch.cuda.synchronize(example.device)

    with torch.no_grad():
        for _ in range(warmup):
            fn(example)
        sync()
        start = time.perf_counter()
        for _ in range(repeats):
            fn(example)
        sync()
    return (time.perf_counter() - start) * 1000 / (repeats * example.shape[0])


def inference_cost(model: torch.nn.Module, example: torch.Tensor, predict: Callable[[torch.Tensor], Any]) -> dict:
    """FLOPs of `model` on one image and wall-clock ms per image of `predict`, in eval mode."""
    model.eval()
    return {"flops_per_image": flops_per_image(model, example[:1]),
            "inference_ms_per_image": round(inference_ms_per_image(predict, example), 3)}


def _miou_batch(tallies: np.ndarray) -> np.ndarray:
    """mIoU of each of B summed class tallies (B,3,C), same averaging as scores_from_confusion."""
    tp, truth, predicted = tallies[:, 0], tallies[:, 1], tallies[:, 2]
    union = truth + predicted - tp
    iou = np.divide(tp, union, out=np.zeros_like(tp), where=union > 0)
    present = union > 0  # union is 0 exactly when a class is absent from truth and prediction
    with np.errstate(invalid="ignore"):
        return iou.sum(1) / present.sum(1)


def bootstrap_samples(tallies_a: np.ndarray, tallies_b: np.ndarray, samples: int = 1000,
                      seed: int = 0) -> tuple[float, np.ndarray]:
    """mIoU(a) - mIoU(b) on the same test images, and `samples` values of it over resampled images.

    Both models get the same resampled images, so the spread reflects the paired difference.
    """
    tallies_a, tallies_b = np.asarray(tallies_a), np.asarray(tallies_b)
    if tallies_a.shape != tallies_b.shape or tallies_a.ndim != 3 or tallies_a.shape[1] != 3:
        raise ValueError(f"per-image class tallies {tallies_a.shape} and {tallies_b.shape} must be the same (N,3,C)")
    n, _, c = tallies_a.shape
    # How often each image is drawn in each resample: the same as drawing N indices with replacement.
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=samples).astype(np.float64)
    mious = [_miou_batch((counts @ tallies.reshape(n, 3 * c).astype(np.float64)).reshape(samples, 3, c))
             for tallies in (tallies_a, tallies_b)]
    full = _miou_batch(np.stack([tallies_a.sum(0), tallies_b.sum(0)]).astype(np.float64))
    return float(full[0] - full[1]), mious[0] - mious[1]
