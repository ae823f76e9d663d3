"""Fixed combiners over member class probabilities, (M, N, C, H, W) -> (N, C, H, W) scores.

Scores are renormalised to sum to 1 per pixel so that every strategy writes probabilities;
argmax is unchanged by that. Vote ties go to the lowest class index (argmax order).
"""

from __future__ import annotations

import numpy as np


def combine_max(probs: np.ndarray) -> np.ndarray:
    return probs.max(0)


def combine_min(probs: np.ndarray) -> np.ndarray:
    return probs.min(0)


def combine_mean(probs: np.ndarray) -> np.ndarray:
    return probs.mean(0)


def combine_vote(probs: np.ndarray) -> np.ndarray:
    """Fraction of members whose argmax is each class."""
    num_classes = probs.shape[2]
    votes = probs.argmax(2)  # (M, N, H, W)
    return np.stack([(votes == c).mean(0) for c in range(num_classes)], axis=1)


COMBINERS = {"max": combine_max, "min": combine_min, "mean": combine_mean, "vote": combine_vote}


def combine(name: str, probs: np.ndarray) -> np.ndarray:
    scores = COMBINERS[name](probs.astype(np.float32))
    return scores / np.maximum(scores.sum(1, keepdims=True), 1e-12)
