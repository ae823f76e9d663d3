"""Metrics against hand-computed values and plain numpy, cost counters against analytic counts."""

import time

import numpy as np
import pytest
import torch
from torch import nn

from seg_p2p.metrics import (SegmentationScorer, bootstrap_samples, class_tallies, flops_per_image, inference_cost,
                             inference_ms_per_image, scores_from_confusion)

NAMES = ["sky", "road", "car", "tree"]


def test_scores_by_hand():
    # class 0 and 1 in the truth, class 2 only predicted, class 3 nowhere, one void pixel.
    target = torch.tensor([[[0, 0, 1], [1, 255, 0]]])
    pred = torch.tensor([[[0, 1, 1], [2, 2, 0]]])
    scorer = SegmentationScorer(NAMES)
    scorer.update(pred, target)
    streamed, tallies = scorer.compute()
    confusion = np.array([[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])  # rows: truth, columns: prediction
    # per class: true positives, pixels in the truth, pixels predicted
    assert tallies.dtype == np.int64 and tallies.shape == (1, 3, 4)
    assert tallies[0].tolist() == [[2, 1, 0, 0], [3, 2, 0, 0], [2, 2, 1, 0]]

    scores = scores_from_confusion(confusion, NAMES)
    assert scores["per_class_iou"] == pytest.approx({"sky": 2 / 3, "road": 1 / 3, "car": 0.0, "tree": None})
    assert scores["per_class_accuracy"] == pytest.approx({"sky": 2 / 3, "road": 1 / 2, "car": 0.0, "tree": None})
    assert scores["miou"] == pytest.approx(1 / 3)  # tree skipped, car counts 0
    assert scores["pixel_accuracy"] == pytest.approx(3 / 5)  # the void pixel is not counted
    assert scores["mean_class_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    for key in ("miou", "pixel_accuracy", "mean_class_accuracy"):  # the streamed torchmetrics scores agree
        assert streamed[key] == pytest.approx(scores[key], abs=1e-6)


def _random_batch(generator, n=3, size=5, classes=4):
    target = torch.randint(0, classes, (n, size, size), generator=generator)
    target[torch.rand(target.shape, generator=generator) < 0.1] = 255
    pred = torch.randint(0, classes, (n, size, size), generator=generator)
    return pred, target


def numpy_confusion(pred: np.ndarray, target: np.ndarray, classes: int) -> np.ndarray:
    """(C,C) counts of (truth, prediction) pairs over the non-void (255) pixels, by plain numpy."""
    valid = target != 255
    confusion = np.zeros((classes, classes), np.int64)
    np.add.at(confusion, (target[valid], pred[valid]), 1)
    return confusion


def test_per_image_tallies_equal_plain_numpy():
    generator = torch.Generator().manual_seed(0)
    scorer, expected = SegmentationScorer(4), []
    for _ in range(2):  # per-image order is kept across batches
        pred, target = _random_batch(generator, classes=4)
        scorer.update(pred, target)
        for p, t in zip(pred.numpy(), target.numpy()):
            valid = t != 255
            expected.append([np.bincount(t[valid][t[valid] == p[valid]], minlength=4),
                             np.bincount(t[valid], minlength=4), np.bincount(p[valid], minlength=4)])
    _, ours = scorer.compute()
    assert ours.dtype == np.int64 and ours.shape == (6, 3, 4)
    np.testing.assert_array_equal(ours, np.array(expected))


@pytest.mark.parametrize("which", ["target", "pred"])
def test_out_of_range_class_ids_are_refused(which):
    ids = {"pred": torch.zeros(1, 2, 2, dtype=torch.long), "target": torch.zeros(1, 2, 2, dtype=torch.long)}
    ids[which][0, 0, 1] = 7
    with pytest.raises(ValueError, match=which):
        SegmentationScorer(4).update(ids["pred"], ids["target"])


def test_scorer_matches_scores_from_summed_per_image_tallies():
    generator = torch.Generator().manual_seed(1)
    scorer, scorer_inputs = SegmentationScorer(NAMES), ([], [])
    for _ in range(3):
        pred, target = _random_batch(generator)
        pred[pred == 3] = 2  # class 3 never predicted
        scorer.update(pred, target)
        scorer_inputs[0].extend(pred)
        scorer_inputs[1].extend(target)
    scores, per_image = scorer.compute()
    assert per_image.shape == (9, 3, 4) and per_image.dtype == np.int64
    confusion = np.zeros((4, 4), np.int64)
    for p, t in zip(*scorer_inputs):
        confusion += numpy_confusion(p.numpy(), t.numpy(), 4)
    np.testing.assert_array_equal(class_tallies(confusion), per_image.sum(0))
    recomputed = scores_from_confusion(confusion, NAMES)
    for key in ("miou", "pixel_accuracy", "mean_class_accuracy"):
        assert recomputed[key] == pytest.approx(scores[key], abs=1e-6)
    assert recomputed["per_class_iou"] == scores["per_class_iou"]
    assert scores["per_class_iou"]["tree"] == 0.0  # in the truth, never predicted


def test_scorer_takes_a_class_count_and_keeps_the_deterministic_flag():
    was = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        scorer = SegmentationScorer(3)
        scorer.update(torch.tensor([[[0, 1], [2, 2]]]), torch.tensor([[[0, 1], [2, 255]]]))
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(was[0], warn_only=was[1])
    scores, _ = scorer.compute()
    assert scores["miou"] == 1.0 and list(scores["per_class_iou"]) == ["0", "1", "2"]


def test_flops_are_twice_the_multiply_adds_per_image():
    linear = nn.Linear(8, 4)
    assert flops_per_image(linear, torch.randn(2, 8)) == 2 * 8 * 4
    conv = nn.Conv2d(3, 5, 3, padding=1).eval()
    assert flops_per_image(conv, torch.randn(2, 3, 6, 6)) == 2 * (5 * 6 * 6) * (3 * 3 * 3)
    assert linear.training and not conv.training  # each module's mode is restored


def test_inference_ms_per_image_calls_warmup_plus_repeats():
    """The timed calls alone, per image: calls of at least 8 ms on a batch of 4 are at least 2 ms an image; had
    the two 0.5 s warm-up calls been timed, it would be over 83 ms."""
    calls = []

    def model(x):
        calls.append(x.shape)
        time.sleep(0.5 if len(calls) <= 2 else 0.008)

    ms = inference_ms_per_image(model, torch.zeros(4, 3), repeats=3, warmup=2)
    assert len(calls) == 5 and 2.0 <= ms < 50.0


def test_inference_cost_counts_one_image_in_eval_mode():
    conv = nn.Conv2d(3, 5, 3, padding=1)
    calls = []
    cost = inference_cost(conv, torch.randn(4, 3, 6, 6), lambda x: calls.append(x.shape))
    assert cost["flops_per_image"] == 2 * (5 * 6 * 6) * (3 * 3 * 3)
    assert cost["inference_ms_per_image"] >= 0 and calls and all(shape == (4, 3, 6, 6) for shape in calls)
    assert not conv.training


def _confusions(rng, n, classes, error_rate):
    """Per-image confusions of a model wrong on about error_rate of 100 pixels per class."""
    conf = np.zeros((n, classes, classes), dtype=np.int64)
    for c in range(classes):
        wrong = rng.binomial(100, error_rate, size=n)
        conf[:, c, c] = 100 - wrong
        conf[:, c, (c + 1) % classes] = wrong
    return conf


def _tallies(rng, n, classes, error_rate):
    return class_tallies(_confusions(rng, n, classes, error_rate))


def interval(tallies_a, tallies_b) -> tuple[float, float, float]:
    """The report's 95% interval of mIoU(a) - mIoU(b) over resampled test images (report/numbers.py)."""
    delta, draws = bootstrap_samples(tallies_a, tallies_b, 1000)
    low, high = np.percentile(draws, [2.5, 97.5])
    return low, delta, high


def test_bootstrap_identical_models_give_zero_delta_and_zero_width():
    tallies = _tallies(np.random.default_rng(0), 20, 5, 0.3)
    assert interval(tallies, tallies.copy()) == (0.0, 0.0, 0.0)


def test_bootstrap_better_model_has_a_positive_interval_around_the_full_delta():
    rng = np.random.default_rng(0)
    good, bad = _confusions(rng, 100, 12, 0.1), _confusions(rng, 100, 12, 0.3)
    low, delta, high = interval(class_tallies(good), class_tallies(bad))
    assert 0 < low <= delta <= high
    assert delta == pytest.approx(scores_from_confusion(good.sum(0), list("abcdefghijkl"))["miou"]
                                  - scores_from_confusion(bad.sum(0), list("abcdefghijkl"))["miou"])
    low, flipped, high = interval(class_tallies(bad), class_tallies(good))
    assert high < 0 and flipped == pytest.approx(-delta)
