"""Augmentation keeps photo and mask aligned; dataset items are a pure function of (seed, epoch, index)."""

import pickle

import numpy as np
import pytest
import torch

from seg_p2p.config import InferenceConfig
from seg_p2p.data.settings import DataConfig, SyntheticConfig
from seg_p2p.data.spec import IGNORE_INDEX
from seg_p2p.data.dataset import SegmentationDataset
from seg_p2p.data.prepare import PreparedData, prepare
from seg_p2p.data.transforms import build_transform

COLOURS = np.array([(230, 20, 20), (20, 230, 20), (20, 20, 230), (230, 230, 20), (20, 230, 230), (230, 20, 230)],
                   dtype=np.uint8)  # >= 210 RGB units apart


def block_image(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """64x64 photo of 8x8 single-colour blocks; the mask is the class of each pixel's colour."""
    mask = np.random.default_rng(seed).integers(0, len(COLOURS), (8, 8)).repeat(8, 0).repeat(8, 1).astype(np.uint8)
    return COLOURS[mask], mask


def assert_aligned(photo: np.ndarray, mask: np.ndarray) -> None:
    """Wherever the photo shows a pure block colour, the mask holds that colour's class."""
    distance = np.linalg.norm(photo[:, :, None, :].astype(float) - COLOURS[None, None].astype(float), axis=-1)
    pure = distance.min(axis=-1) < 10
    assert pure.mean() > 0.3  # the check must cover much of the image to mean anything
    assert (mask[pure] == distance.argmin(axis=-1)[pure]).all()
    assert set(np.unique(mask)) <= set(range(len(COLOURS)))  # nearest neighbour: no blended class ids


def config(mode="resize", **data) -> tuple[DataConfig, str]:
    """What build_transform reads: the data settings and the inference mode."""
    return DataConfig(**data), InferenceConfig(mode=mode).mode


@pytest.mark.parametrize("mode", ["resize", "slide"])
@pytest.mark.parametrize("train", [True, False])
def test_transforms_keep_alignment(train, mode):
    transform = build_transform(*config(mode, load_size=72, crop_size=64, scale_range=[1.0, 2.0]), train=train)
    for seed in range(40):
        photo, mask = block_image(seed)
        transform.set_random_seed(seed)
        out = transform(image=photo, mask=mask)
        size = photo.shape[:2] if mode == "slide" and not train else (64, 64)  # slide evaluates at native size
        assert out["image"].shape == (*size, 3) and out["mask"].shape == size
        assert_aligned(out["image"], out["mask"])


def test_slide_training_crops_rescale_and_pad_with_void():
    photo, mask = block_image(0)
    shrink = build_transform(*config("slide", load_size=72, crop_size=64, scale_range=[0.25, 0.25], flip=False), True)
    out = shrink(image=photo, mask=mask)
    h, w = round(photo.shape[0] / 4), round(photo.shape[1] / 4)  # smaller than the crop: padded bottom-right
    assert out["image"].shape == (64, 64, 3) and (out["mask"][h:] == IGNORE_INDEX).all()
    assert (out["mask"][:, w:] == IGNORE_INDEX).all() and (out["image"][h:] == 128).all()
    assert (out["mask"][:h, :w] != IGNORE_INDEX).all()
    native = build_transform(*config("slide", load_size=72, crop_size=64, scale_range=[1.0, 1.0], flip=False), True)
    native.set_random_seed(0)
    crop = native(image=photo, mask=mask)["mask"]  # a crop of the photo at its own scale: found in it unchanged
    assert any((mask[y:y + 64, x:x + 64] == crop).all() for y in range(mask.shape[0] - 63)
               for x in range(mask.shape[1] - 63))


def test_train_transform_flips_about_half_the_time():
    with_flip = build_transform(*config(load_size=72, crop_size=64), train=True)
    without = build_transform(*config(load_size=72, crop_size=64, flip=False), True)
    photo, mask = block_image(0)
    flipped = 0
    for seed in range(40):
        with_flip.set_random_seed(seed)
        without.set_random_seed(seed)  # same seed, same crop
        a, b = with_flip(image=photo, mask=mask), without(image=photo, mask=mask)
        assert np.array_equal(a["mask"], b["mask"]) or np.array_equal(a["mask"], b["mask"][:, ::-1])
        assert np.array_equal(a["image"], b["image"]) == np.array_equal(a["mask"], b["mask"])  # jointly
        flipped += not np.array_equal(a["mask"], b["mask"])
    assert 8 <= flipped <= 32


def test_eval_transform_resizes_to_crop_size():
    photo, mask = block_image(0)
    out = build_transform(*config(load_size=40, crop_size=32), train=False)(image=photo, mask=mask)
    assert out["image"].shape == (32, 32, 3)
    assert_aligned(out["image"], out["mask"])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    prepare(DataConfig(synthetic=SyntheticConfig(size=64, num_train=8, num_val=1, num_test=1)), out)
    return PreparedData(out)


def items(dataset, indices):
    return [dataset[i] for i in indices]


def test_dataset_items(prepared):
    dataset = SegmentationDataset(prepared, "train", build_transform(*config(), train=True), seed=3)
    item = dataset[2]
    assert len(dataset) == 8 and item["index"] == 2
    assert item["photo"].dtype == torch.float32 and item["photo"].shape == (3, 64, 64)
    assert -1 <= item["photo"].min() and item["photo"].max() <= 1
    assert item["mask"].dtype == torch.int64 and item["mask"].shape == (64, 64)


def test_dataset_is_a_pure_function_of_seed_epoch_index(prepared):
    transform = build_transform(*config(), train=True)
    first = SegmentationDataset(prepared, "train", transform, seed=3)
    again = SegmentationDataset(prepared, "train", build_transform(*config(), train=True), seed=3)
    order = [5, 1, 7, 1, 0]
    for a, b in zip(items(first, order), items(again, order[::-1])[::-1]):  # order of access does not matter
        assert torch.equal(a["photo"], b["photo"]) and torch.equal(a["mask"], b["mask"])
    before = items(first, range(8))
    first.set_epoch(1)
    after = items(first, range(8))
    assert any(not torch.equal(a["photo"], b["photo"]) for a, b in zip(before, after))  # new crops and flips
    other_seed = items(SegmentationDataset(prepared, "train", transform, seed=4), range(8))
    assert any(not torch.equal(a["mask"], b["mask"]) for a, b in zip(before, other_seed))


def test_dataloader_workers_see_the_same_items(prepared):
    dataset = SegmentationDataset(prepared, "train", build_transform(*config(), train=True), seed=0)
    dataset.set_epoch(2)
    dataset[0]  # opens the memory maps; pickling for workers must not copy them
    assert len(pickle.dumps(dataset)) < 100_000
    batches = [list(torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=workers))
               for workers in (0, 2)]
    for a, b in zip(*batches):
        assert torch.equal(a["photo"], b["photo"]) and torch.equal(a["mask"], b["mask"])
