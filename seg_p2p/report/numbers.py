"""Means over seeds, their text, and paired mIoU differences with a bootstrap interval.

One place for the formatting so the tables and the verdict sentences print a number the same way.
"""

from __future__ import annotations

import math

import numpy as np

from seg_p2p.metrics import bootstrap_delta
from seg_p2p.report.study import Study

BOOTSTRAP_SAMPLES = 1000


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (nan with fewer than two values)."""
    if not values:
        return math.nan, math.nan
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def fmt(mean: float, std: float = math.nan, digits: int = 3) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def millions(count: int) -> str:
    return f"{count / 1e6:.2f}"


def fmt_delta(delta: dict | None) -> str:
    return "—" if delta is None else f"{delta['delta']:+.3f} [{delta['low']:+.3f}, {delta['high']:+.3f}]"


def paired_delta(study: Study, a: str, b: str) -> dict:
    """mIoU(a) - mIoU(b) with its 95% interval, bootstrapped per seed and averaged over seeds."""
    per_seed = [bootstrap_delta(study.confusion(a, i), study.confusion(b, i), BOOTSTRAP_SAMPLES, seed=i)
                for i in range(len(study.seeds))]
    return {key: float(np.mean([d[key] for d in per_seed])) for key in ("delta", "low", "high")}


def stat(row: dict, shown: dict, key: str, label: str, values: list[float], digits: int = 3) -> None:
    """Put a mean/std pair in the numeric row and its 'mean ± std' text in the shown row."""
    row[f"{key}_mean"], row[f"{key}_std"] = mean_std(values)
    shown[label] = fmt(row[f"{key}_mean"], row[f"{key}_std"], digits)


def diverged(study: Study, model: str) -> tuple[int, int, int]:
    """(diverged, not recorded, runs) over seeds."""
    flags = [record["diverged"] for record in study.evals[model]]
    return sum(f is True for f in flags), sum(f is None for f in flags), len(flags)
