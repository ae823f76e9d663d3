"""Pascal VOC 2012 and ADE20K read as downloaded, on tiny fake downloads (conftest's write_voc, write_ade20k)."""

import pytest
from conftest import ADE20K_SPLITS, VOC_SPLITS, write_ade20k, write_voc

from seg_p2p.cli import main
from seg_p2p.data.layouts.ade20k import NUM_CLASSES
from seg_p2p.data.prepare import PreparedData, prepare, split_plan
from seg_p2p.data.layouts import detect_layout
from seg_p2p.data.readers import RawDataset
from seg_p2p.data.settings import DataConfig
from seg_p2p.data.spec import IGNORE_INDEX, load_spec

VOC_NAMES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
             "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]


def voc_colour_map(count):
    """The VOC devkit's VOClabelcolormap: the bits of the class id spread over r, g, b from the high bit down."""
    colours = []
    for index in range(count):
        rgb, value = [0, 0, 0], index
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        colours.append(rgb)
    return colours


@pytest.fixture
def voc(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    return root, write_voc(root)


@pytest.fixture
def ade(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    return root, write_ade20k(root)


def test_voc_spec_is_the_devkit_colour_map():
    spec = load_spec("voc")
    assert spec.names == VOC_NAMES and spec.void_value == 255
    assert spec.palette.tolist() == voc_colour_map(21)


def test_ade20k_spec_lists_the_150_classes_in_objectinfo150_order():
    spec = load_spec("ade20k")
    assert spec.num_classes == NUM_CLASSES == 150 and spec.void_value is None
    assert spec.names[:4] == ["wall", "building", "sky", "floor"] and spec.names[-3:] == ["glass", "clock", "flag"]
    assert spec.names[44] == "chest of drawers" and spec.names[149] == "flag"
    assert spec.palette[0].tolist() == [120, 120, 120] and spec.palette[149].tolist() == [92, 0, 255]


def test_layouts_detected_before_the_generic_ones(voc, ade):
    (voc_root, _), (ade_root, _) = voc, ade
    assert detect_layout(voc_root).name == "voc" and detect_layout(ade_root).name == "ade20k"
    (voc_root / "train").mkdir()  # an aligned split, but VOC's folders decide
    assert detect_layout(voc_root).name == "voc"


def test_voc_splits_are_its_lists_and_labels_its_indices(voc):
    root, written = voc
    raw = RawDataset(root, load_spec("voc"))
    assert raw.format == "voc" and list(raw.splits) == ["train", "val"]
    for split, names in VOC_SPLITS.items():
        assert [pair.name for pair in raw.splits[split]] == list(names)  # list order; 2012_004000 is in no list
        assert raw.splits[split][0].photo == root / "JPEGImages" / f"{names[0]}.jpg"
        for (name, photo, mask), (_, ids) in zip(raw.samples(split), written[split]):
            assert photo.shape == (12, 16, 3) and (mask == ids).all() and (mask[0] == IGNORE_INDEX).all()


def test_ade20k_value_k_is_class_k_minus_1_and_other_is_void(ade):
    root, written = ade
    raw = RawDataset(root, load_spec("ade20k"))
    assert raw.format == "ade20k" and list(raw.splits) == ["train", "val"]
    assert [pair.name for pair in raw.splits["val"]] == list(ADE20K_SPLITS["val"])
    for (_, _, mask), (_, values) in zip(raw.samples("train"), written["train"]):
        assert (mask[values == 0] == IGNORE_INDEX).all() and (mask[values > 0] == values[values > 0] - 1).all()
        assert mask.ravel()[[1, 150]].tolist() == [0, 149]


@pytest.mark.parametrize("layout", ["voc", "ade20k"])
def test_prepare_uses_val_as_test_and_carves_val_from_train(voc, ade, tmp_path, layout):
    root, written = voc if layout == "voc" else ade
    raw = RawDataset(root, load_spec(layout))
    plan = split_plan(raw, 0.34)
    assert plan["test"] == raw.splits["val"] and len(plan["val"]) == 1 and len(plan["train"]) == 2
    prepare(DataConfig(dataset=layout, root=str(root)), tmp_path / "prepared")
    data = PreparedData(tmp_path / "prepared")
    assert data.spec.name == layout and data.names("test") == [name for name, _ in written["val"]]
    assert data.sizes("test") == [(12, 16)] * 2 and data.masks("test")[0].max() == IGNORE_INDEX


@pytest.mark.parametrize("layout, classes, void", [
    ("voc", 21, "+ void (value 255 -> 255)"),
    ("ade20k", 150, "+ void (value 0, 'other'; value k is class k-1 -> 255)"),
])
def test_data_check_takes_the_built_in_spec(voc, ade, capsys, layout, classes, void):
    root, _ = voc if layout == "voc" else ade
    main(["data", "check", str(root)])
    report = capsys.readouterr().out
    assert f"format:  {layout} (ROOT = " in report
    assert f"spec:    {layout} (built-in, matched by the {layout} layout): {classes} classes {void}" in report
    lines = [line.split()[:2] for line in report.splitlines()]
    assert ["train", "3"] in lines and ["val", "2"] in lines and "test       none  (prepare uses val as test" in report

