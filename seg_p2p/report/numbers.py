"""Means over seeds, their text, and paired mIoU differences with an interval over seeds and images.

One place for the formatting so the tables and the verdict sentences print a number the same way.
"""

from __future__ import annotations

import math

import numpy as np

from seg_p2p.metrics import bootstrap_samples
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
    """mIoU(a) - mIoU(b): the mean over seeds of each seed's difference on the test images, with a 95% two-level
    bootstrap interval: seeds resampled with replacement, then the test images within each drawn seed (the same
    images for both models), so the interval covers training randomness and the test set alike."""
    per_seed = [bootstrap_samples(study.tallies(a, i), study.tallies(b, i), BOOTSTRAP_SAMPLES, seed=i)
                for i in range(len(study.seeds))]
    deltas = [delta for delta, _ in per_seed]
    draws = np.stack([samples for _, samples in per_seed])  # (seeds, BOOTSTRAP_SAMPLES)
    rng = np.random.default_rng(len(deltas))
    seeds = rng.integers(len(deltas), size=(BOOTSTRAP_SAMPLES, len(deltas)))
    images = rng.integers(BOOTSTRAP_SAMPLES, size=(BOOTSTRAP_SAMPLES, len(deltas)))  # an image resample per draw
    resampled = draws[seeds, images].mean(1)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return {"delta": float(np.mean(deltas)), "low": float(low), "high": float(high), "seeds": len(deltas),
            "se": float(np.std(resampled, ddof=1))}


POWER_Z = 2.80  # z of a two-sided 5% test (1.96) + z of 80% power (0.84)


def resolution(delta: dict) -> tuple[float, int | None]:
    """The smallest |Δ| this study resolves at 80% power and a two-sided 5% level, POWER_Z × the paired Δ's standard
    error (its two-level bootstrap's standard deviation); and the seeds that would resolve the observed Δ,
    n × (POWER_Z · SE / Δ)², taking the standard error to shrink as 1/√seeds (None for a Δ of 0). The test images'
    part of the error does not shrink with seeds, so the count is a lower bound."""
    detectable = POWER_Z * delta["se"]
    if delta["delta"] == 0:
        return detectable, None
    return detectable, math.ceil(delta["seeds"] * (detectable / delta["delta"]) ** 2)


def seed_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and its 95% t-interval over seeds (nan bounds with fewer than two seeds)."""
    from scipy.stats import t

    mean = float(np.mean(values)) if values else math.nan
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = float(t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values)))
    return mean, mean - half, mean + half


def stat(row: dict, shown: dict, key: str, label: str, values: list[float], digits: int = 3) -> None:
    """Put a mean/std pair in the numeric row and its 'mean ± std' text in the shown row."""
    row[f"{key}_mean"], row[f"{key}_std"] = mean_std(values)
    shown[label] = fmt(row[f"{key}_mean"], row[f"{key}_std"], digits)


def diverged(study: Study, model: str) -> tuple[int, int, int]:
    """(diverged, not recorded, runs) over seeds."""
    flags = [record["diverged"] for record in study.evals[model]]
    return sum(f is True for f in flags), sum(f is None for f in flags), len(flags)
