"""The embedded dataset: deterministic, every size, every class, and not solvable by colour alone."""

import time

import numpy as np
import pytest

from seg_p2p.data.settings import SyntheticConfig
from seg_p2p.data import synthetic
from seg_p2p.data.spec import load_spec

SPEC = load_spec("synthetic")


@pytest.fixture(scope="module")
def default_set():
    """The default 336 images at 64 px, generated once, with the time it took."""
    start = time.perf_counter()
    data = synthetic.generate(SyntheticConfig())
    return data, time.perf_counter() - start


def test_spec_matches_generator():
    assert SPEC.num_classes >= 6
    constants = ["SKY", "WALL", "WINDOW", "DOOR", "ROAD", "CAR", "VEGETATION", "POLE"]
    assert [getattr(synthetic, name) for name in constants] == list(range(SPEC.num_classes))
    assert [name.lower() for name in constants] == SPEC.names


def test_default_set_shapes_classes_and_speed(default_set):
    data, seconds = default_set
    print(f"336 images at 64 px: {seconds:.2f} s")
    assert seconds < 15  # a few seconds on a laptop; generous for a busy CI machine
    for split, count in (("train", 240), ("val", 48), ("test", 48)):
        photos, masks = data[split]
        assert photos.shape == (count, 64, 64, 3) and photos.dtype == np.uint8
        assert masks.shape == (count, 64, 64) and masks.dtype == np.uint8
        assert set(np.unique(masks)) == set(range(SPEC.num_classes))  # every class appears in every split


def test_deterministic():
    cfg = SyntheticConfig(size=64, num_train=4, num_val=2, num_test=2, seed=7)
    first, second = synthetic.generate(cfg), synthetic.generate(cfg)
    other = synthetic.generate(cfg.model_copy(update={"seed": 8}))
    for split in first:
        for a, b, c in zip(first[split], second[split], other[split]):
            assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()


@pytest.mark.parametrize("size", [64, 128, 256])
def test_sizes(size):
    photos, masks = synthetic.generate(SyntheticConfig(size=size, num_train=3, num_val=1, num_test=1))["train"]
    assert photos.shape == (3, size, size, 3) and masks.shape == (3, size, size)
    assert masks.max() < SPEC.num_classes and len(np.unique(masks)) >= 6


def mean_colour_miou(data) -> tuple[float, np.ndarray]:
    """Fit one mean colour per class on train, label test pixels by the nearest mean, score mIoU."""
    photos, masks = data["train"]
    pixels, labels = photos.reshape(-1, 3).astype(np.float32), masks.ravel()
    means = np.stack([pixels[labels == c].mean(axis=0) for c in range(SPEC.num_classes)])
    photos, masks = data["test"]
    pixels, labels = photos.reshape(-1, 3).astype(np.float32), masks.ravel()
    predicted = ((pixels[:, None, :] - means[None]) ** 2).sum(axis=-1).argmin(axis=1)
    ious = np.array([((predicted == c) & (labels == c)).sum() / ((predicted == c) | (labels == c)).sum()
                     for c in range(SPEC.num_classes)])
    return ious.mean(), ious


def test_colour_alone_does_not_solve_it(default_set):
    miou, ious = mean_colour_miou(default_set[0])
    print(f"nearest-mean-colour mIoU {miou:.3f}; per class " + ", ".join(
        f"{name} {iou:.2f}" for name, iou in zip(SPEC.names, ious)))
    assert miou < 0.6
