"""`seg-p2p data check`: spec resolution and report, on tiny folders and on the shared datasets."""

import shutil

import numpy as np
import pytest
from conftest import shared_dataset
from PIL import Image

from seg_p2p.data.settings import DataConfig
from seg_p2p.data.check import check_dataset
from seg_p2p.data.prepare import PreparedData, prepare
from seg_p2p.data.spec import IGNORE_INDEX, SPECS_DIR, load_spec
from seg_p2p.errors import UserError


def write_index_dataset(root, counts):
    """CamVid-like index layout of 12x16 images with classes 0..10 and void 11."""
    rng = np.random.default_rng(0)
    for split, count in counts.items():
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(root / split / f"{i}.png")
            mask = np.full((12, 16), 11, np.uint8)
            mask[:6] = i % 11
            Image.fromarray(mask).save(root / f"{split}annot" / f"{i}.png")


def test_report_on_index_layout(tmp_path):
    root = tmp_path / "camvid"  # named like a built-in spec, so that spec applies
    write_index_dataset(root, {"train": 3, "val": 2, "test": 2})
    report = check_dataset(root, None)
    assert "format:  index" in report and "camvid (built-in, matched by folder name)" in report
    assert "11 classes + void (value 11 -> 255)" in report
    lines = report.splitlines()
    assert any(line.split()[:3] == ["train", "3", "16x12"] for line in lines)
    assert any(line.split()[:2] == ["void", "50.00"] for line in lines)
    assert "absent everywhere" in report and "RGB units" not in report


def test_spec_resolution_order(tmp_path):
    root = tmp_path / "mine"
    write_index_dataset(root, {"train": 2, "test": 1})
    with pytest.raises(UserError, match="write .*dataset.yaml"):
        check_dataset(root, None)
    shutil.copy(SPECS_DIR / "camvid.yaml", root / "dataset.yaml")
    assert f"({root / 'dataset.yaml'})" in check_dataset(root, None)
    assert "(--dataset camvid)" in check_dataset(root, "camvid")
    assert "val        none  (prepare carves" in check_dataset(root, "camvid")


def test_report_on_colour_labels(tmp_path):
    spec = load_spec("facades")
    rng = np.random.default_rng(0)
    for split, count in (("train", 2), ("test", 1)):
        for i in range(count):
            for side, image in (("A", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)),
                                ("B", spec.palette[rng.integers(0, 12, (8, 8))])):
                (tmp_path / side / split).mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(tmp_path / side / split / f"{i}.png")
    report = check_dataset(tmp_path, "facades")
    assert "format:  paired" in report and "12 classes, no void" in report
    assert "label pixels > 30 RGB units from every palette colour: train 0.0%, test 0.0%" in report


def split_counts(report):
    return {line.split()[0]: int(line.split()[1]) for line in report.splitlines()
            if line.split()[:1] in (["train"], ["val"], ["test"]) and line.split()[1].isdigit()}


def test_check_shared_facades():
    report = check_dataset(shared_dataset("facades"), None)
    assert "format:  paired" in report and "12 classes, no void" in report
    assert split_counts(report) == {"train": 400, "test": 106}
    assert "256x256" in report


def test_check_shared_camvid():
    report = check_dataset(shared_dataset("camvid"), None)
    assert "format:  index" in report and "11 classes + void" in report
    assert split_counts(report) == {"train": 245, "val": 101, "test": 233}


def test_prepare_shared_camvid(tmp_path):
    root = shared_dataset("camvid")
    prepare(DataConfig(dataset="camvid", root=str(root)), tmp_path / "camvid")
    data = PreparedData(tmp_path / "camvid")
    assert data.spec.name == "camvid"
    for split, count in (("train", 245), ("val", 101), ("test", 233)):
        assert data.sizes(split) == [(360, 480)] * count and len(data.names(split)) == count
        assert data.photos(split)[count - 1].shape == (360, 480, 3)
    masks = data.masks("val")
    values = np.unique(np.stack([masks[i] for i in range(10)]))
    assert IGNORE_INDEX in values and values[values != IGNORE_INDEX].max() < 11
    assert data.names("test")[0] == sorted(p.stem for p in (root / "test").glob("*.png"))[0]
