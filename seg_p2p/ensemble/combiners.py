"""Fixed combiners over member class probabilities, (M, N, C, H, W) -> (N, C, H, W) scores.

They combine one test image at a time, each member's stored probabilities grown back to the evaluation size
first (predict.py), so memory holds one image whatever the split's size. Scores are renormalised to sum to 1 per pixel so that every strategy writes probabilities;
argmax is unchanged by that. Vote ties go to the lowest class index (argmax order).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from seg_p2p.ensemble.strategy import (CombinerKind, CostInputs, SegmentRequest, StrategyRun, member_probs,
                                       members_cost, register_combiner)
from seg_p2p.inference import Inference, resample
from seg_p2p.metrics import inference_ms_per_image
from seg_p2p.predict import SplitOutput, prediction_writer


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
        classes = job.data.spec.num_classes
        probs = {split: member_probs(job.runs_dir, job.strategy.members, split, classes)
                 for split in ("test", "val")}  # missing outputs fail before tracking
        inference = Inference.from_config(job.cfg)
        with job.tracker():
            for split, split_probs in probs.items():  # val: what the report picks the best ensemble by
                self.write_split(job, split, split_probs, inference)

    def write_split(self, job: StrategyRun, split: str, probs: list, inference: Inference) -> None:
        """One split's predictions, combined image by image from the members' stored probabilities `probs`."""
        eval_sizes = [inference.eval_size(size) for size in job.data.sizes(split)]
        target = SplitOutput(job.out_dir / "predict", split, eval_sizes, job.data.spec.num_classes)
        with prediction_writer(target, inference) as writer:
            for i, size in enumerate(tqdm(eval_sizes, desc=f"ensemble {job.name} {split}", unit="img", leave=False)):
                members = torch.stack([resample(torch.from_numpy(p[i].astype(np.float32))[None], size)[0]
                                       for p in probs])
                writer.write(i, torch.from_numpy(self.combine(members[:, None].numpy())[0]))

    def photo_predictor(self, job: SegmentRequest):
        members = job.members()

        def predict(photo):
            probs = torch.stack([job.inference.probabilities(member, photo) for member in members])
            return torch.from_numpy(self.combine(probs.cpu().numpy()))

        return predict

    def plan(self, strategy, estimator):
        return estimator.fixed_strategy()

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
