"""Fixed combiners over member class probabilities, (M, N, C, H, W) -> (N, C, H, W) scores.

Scores are renormalised to sum to 1 per pixel so that every strategy writes probabilities;
argmax is unchanged by that. Vote ties go to the lowest class index (argmax order).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from seg_p2p.atomic import atomic_dir, open_npy, save_npy
from seg_p2p.ensemble.strategy import CombinerKind, CostInputs, StrategyRun, member_probs, members_cost, \
    register_combiner
from seg_p2p.metrics import inference_ms_per_image

CHUNK = 16  # images combined at a time: bounded memory whatever the split size


def combine_vote(probs: np.ndarray) -> np.ndarray:
    """Fraction of members whose argmax is each class."""
    num_classes = probs.shape[2]
    votes = probs.argmax(2)  # (M, N, H, W)
    return np.stack([(votes == c).mean(0) for c in range(num_classes)], axis=1)


class FixedCombiner(CombinerKind):
    """A function of the members' stored test probabilities: nothing to train."""

    def __init__(self, scores: Callable[[np.ndarray], np.ndarray]):
        self.scores = scores

    def combine(self, probs: np.ndarray) -> np.ndarray:
        scores = self.scores(probs.astype(np.float32))
        return scores / np.maximum(scores.sum(1, keepdims=True), 1e-12)

    def run(self, job: StrategyRun) -> None:
        from PIL import Image

        probs = member_probs(job.runs_dir, job.strategy.members, "test")  # missing outputs fail before tracking
        with job.tracker():
            predict = job.out_dir / "predict"
            shape = probs[0].shape
            with open_npy(predict / "test_probs.npy", np.float16, shape) as scores:
                for start in range(0, shape[0], CHUNK):
                    chunk = np.stack([p[start:start + CHUNK] for p in probs])
                    scores[start:start + CHUNK] = self.combine(chunk).astype(np.float16)
                pred = np.asarray(scores).argmax(1).astype(np.uint8)
            save_npy(predict / "test_pred.npy", pred)
            with atomic_dir(predict / "test_masks") as folder:
                for image_name, mask in zip(job.data.names("test"), pred):
                    Image.fromarray(mask).save(folder / f"{Path(image_name).stem}.png")

    def cost(self, inputs: CostInputs) -> dict:
        cost = members_cost(inputs)
        probs = torch.rand(len(inputs.strategy.members), len(inputs.example), inputs.spec.num_classes,
                           *inputs.example.shape[-2:]).numpy()
        combine_ms = inference_ms_per_image(lambda _: self.combine(probs), inputs.example)
        return cost | {"inference_ms_per_image": round(cost["inference_ms_per_image"] + combine_ms, 3)}


register_combiner("max", FixedCombiner(lambda probs: probs.max(0)))
register_combiner("min", FixedCombiner(lambda probs: probs.min(0)))
register_combiner("mean", FixedCombiner(lambda probs: probs.mean(0)))
register_combiner("vote", FixedCombiner(combine_vote))
