"""The three raw layouts, val carving and the prepared cache, on tiny folders written here."""

import json

import numpy as np
import pytest
from PIL import Image

from seg_p2p.data.settings import DataConfig, SyntheticConfig
from seg_p2p.data.prepare import PreparedData, prepare
from seg_p2p.data.layouts import detect_layout
from seg_p2p.data.readers import RawDataset
from seg_p2p.data.spec import IGNORE_INDEX, DatasetSpec
from seg_p2p.errors import UserError

SPEC = DatasetSpec.model_validate({"name": "tiny", "void_value": 3, "classes": [
    {"name": "red", "colour": [255, 0, 0]}, {"name": "green", "colour": [0, 255, 0]},
    {"name": "blue", "colour": [0, 0, 255]}]})


def sample(rng, void=False):
    """(photo, mask) of 12x16 px: a noise photo (far from the palette) and 4x4 blocks of classes."""
    mask = rng.integers(0, 4 if void else 3, (3, 4)).repeat(4, 0).repeat(4, 1).astype(np.uint8)
    return rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), mask


def colour(mask):
    return SPEC.palette[mask]


def save(path, array, palette=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if palette:
        image.putpalette([255, 255, 255, 9, 9, 9, 50, 60, 70, 0, 0, 0])  # turns L into P, keeping the indices
    image.save(path)


def write_paired(root, counts, seed=0, prefix=None):
    """Paired layout; returns {split: [(name, photo, mask)]}."""
    rng, written = np.random.default_rng(seed), {}
    for split, count in counts.items():
        written[split] = []
        for i in range(1, count + 1):
            name = f"{prefix or split[:2]}{i}"
            photo, mask = sample(rng)
            save(root / "A" / split / f"{name}.png", photo)
            save(root / "B" / split / f"{name}.png", colour(mask))
            written[split].append((name, photo, mask))
    return written


def assert_samples(raw, split, expected):
    got = list(raw.samples(split))
    assert [name for name, _, _ in got] == [name for name, _, _ in expected]
    for (_, photo, mask), (_, want_photo, want_mask) in zip(got, expected):
        assert photo.dtype == np.uint8 and mask.dtype == np.uint8
        assert (photo == want_photo).all() and (mask == want_mask).all()


def test_paired_reader_natural_order(tmp_path):
    written = write_paired(tmp_path, {"train": 11, "test": 2})
    raw = RawDataset(tmp_path, SPEC)
    assert raw.format == "paired" and set(raw.splits) == {"train", "test"}
    assert [p.name for p in raw.splits["train"]][8:] == ["tr9", "tr10", "tr11"]
    assert_samples(raw, "train", written["train"])
    assert raw.off_palette["train"][0] == 0 and raw.off_palette["train"][1] == 11 * 12 * 16


@pytest.mark.parametrize("photo_side", ["left", "right"])
@pytest.mark.parametrize("spec_side", ["auto", "fixed"])
def test_aligned_reader_either_side(tmp_path, photo_side, spec_side):
    rng, expected = np.random.default_rng(1), {}
    for split in ("train", "val", "test"):
        expected[split] = []
        for i in range(3):
            photo, mask = sample(rng)
            halves = (photo, colour(mask)) if photo_side == "left" else (colour(mask), photo)
            save(tmp_path / split / f"{i}.png", np.concatenate(halves, 1))
            expected[split].append((str(i), photo, mask))
    spec = SPEC.model_copy(update={"photo_side": photo_side if spec_side == "fixed" else "auto"})
    raw = RawDataset(tmp_path, spec)
    assert raw.format == "aligned" and raw.layout.photo_side == photo_side
    for split in expected:
        assert_samples(raw, split, expected[split])


def test_index_reader_void_and_palette_mode(tmp_path):
    rng = np.random.default_rng(2)
    expected = {}
    for split in ("train", "test"):
        expected[split] = []
        for i in range(3):
            photo, mask = sample(rng, void=True)
            save(tmp_path / split / f"f{i}.png", photo)
            save(tmp_path / f"{split}annot" / f"f{i}.png", mask, palette=i == 0)  # P mode: indices are classes
            expected[split].append((f"f{i}", photo, np.where(mask == 3, IGNORE_INDEX, mask)))
    raw = RawDataset(tmp_path, SPEC)
    assert raw.format == "index"
    assert_samples(raw, "train", expected["train"])
    assert any((mask == IGNORE_INDEX).any() for _, _, mask in expected["train"])


def test_unknown_layout_lists_the_three(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(UserError) as err:
        detect_layout(tmp_path)
    assert all(fmt in str(err.value) for fmt in ("aligned", "paired", "index"))
    with pytest.raises(UserError, match="not found"):
        detect_layout(tmp_path / "nothing")


def spec_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(json.dumps(SPEC.model_dump()))  # JSON is YAML
    return str(path)


def prepared_names(out):
    data = PreparedData(out)
    return {split: data.names(split) for split in ("train", "val", "test")}


def test_prepare_carves_val_deterministically(tmp_path):
    written = write_paired(tmp_path / "raw", {"train": 20, "test": 5})
    cfg = DataConfig(dataset=spec_file(tmp_path), root=str(tmp_path / "raw"), val_fraction=0.15)
    prepare(cfg, tmp_path / "a")
    prepare(cfg, tmp_path / "b")
    names = prepared_names(tmp_path / "a")
    assert names == prepared_names(tmp_path / "b")
    train_names = [name for name, _, _ in written["train"]]
    assert len(names["val"]) == 3 and not set(names["val"]) & set(names["train"])
    assert sorted(names["val"] + names["train"]) == sorted(train_names)
    assert names["test"] == [name for name, _, _ in written["test"]]  # never carved from test

    data = PreparedData(tmp_path / "a")
    assert data.spec == SPEC
    photos, masks = data.photos("val"), data.masks("val")
    assert isinstance(photos.data, np.memmap) and data.sizes("val") == [(12, 16)] * 3
    assert len(photos) == len(masks) == 3 and photos[0].shape == (12, 16, 3) and masks[0].shape == (12, 16)
    by_name = {name: (photo, mask) for name, photo, mask in written["train"]}
    for i, name in enumerate(names["val"]):
        assert (photos[i] == by_name[name][0]).all() and (masks[i] == by_name[name][1]).all()


def test_prepare_at_least_one_val_and_val_as_test(tmp_path):
    write_paired(tmp_path / "raw", {"train": 4, "val": 2})  # no test: val becomes test, val is carved
    prepare(DataConfig(dataset=spec_file(tmp_path), root=str(tmp_path / "raw"), val_fraction=0.01), tmp_path / "out")
    names = prepared_names(tmp_path / "out")
    assert len(names["val"]) == 1 and len(names["train"]) == 3 and names["test"] == ["va1", "va2"]


def test_prepare_synthetic_and_replace(tmp_path):
    cfg = DataConfig(load_size=32, crop_size=32, synthetic=SyntheticConfig(size=32, num_train=3, num_val=2, num_test=2))
    out = tmp_path / "data" / "prepared"
    prepare(cfg, out)
    prepare(cfg, out)  # an existing cache is replaced whole
    data = PreparedData(out)
    assert data.spec.name == "synthetic" and data.sizes("train") == [(32, 32)] * 3
    assert data.names("test") == ["test_0000", "test_0001"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["prepared"]  # no temp folders left behind


def test_prepare_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a prepared dataset"):
        prepare(DataConfig(synthetic=SyntheticConfig(size=32, num_train=1, num_val=1, num_test=1)), tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_prepared_data_missing(tmp_path):
    with pytest.raises(UserError, match="seg-p2p prepare"):
        PreparedData(tmp_path / "nothing")
