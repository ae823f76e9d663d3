"""The official Cityscapes layout (leftImg8bit + gtFine labelIds), on a tiny fake download written here."""

import numpy as np
import pytest
from PIL import Image

from seg_p2p.cli import main
from seg_p2p.data.check import check_dataset
from seg_p2p.data.layouts.cityscapes import LABELS
from seg_p2p.data.prepare import split_plan
from seg_p2p.data.layouts import detect_layout
from seg_p2p.data.readers import RawDataset
from seg_p2p.data.spec import IGNORE_INDEX, load_spec
from seg_p2p.errors import UserError

SPEC = load_spec("cityscapes")
CITIES = {"train": ("aachen", "bochum"), "val": ("frankfurt", "lindau"), "test": ("berlin",)}
FRAMES = (19, 100, 7)  # per city; names sort by number
# id -> trainId of cityscapesScripts' helpers/labels.py, written out independently of seg_p2p.data.layouts.cityscapes
OFFICIAL = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
            27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def photo_path(root, split, name):
    return root / "leftImg8bit" / split / name.split("_")[0] / f"{name}_leftImg8bit.png"


def label_path(root, split, name):
    return root / "gtFine" / split / name.split("_")[0] / f"{name}_gtFine_labelIds.png"


def write_cityscapes(root):
    """Every city of CITIES with FRAMES frames of 8x16 px, plus the gtFine files the reader must ignore;
    the test split's labels are all 255 (invalid ids), so reading them would fail. Returns {split: [names]}."""
    rng, names = np.random.default_rng(0), {}
    for split, cities in CITIES.items():
        names[split] = []
        for city in cities:
            for frame in FRAMES:
                name = f"{city}_000000_{frame:06d}"
                ids = np.full((8, 16), 255, np.uint8) if split == "test" else rng.integers(0, 34, (8, 16), np.uint8)
                save(photo_path(root, split, name), rng.integers(0, 256, (8, 16, 3), dtype=np.uint8))
                save(label_path(root, split, name), ids)
                label_dir = label_path(root, split, name).parent
                save(label_dir / f"{name}_gtFine_color.png", rng.integers(0, 256, (8, 16, 3), dtype=np.uint8))
                save(label_dir / f"{name}_gtFine_instanceIds.png", ids.astype(np.uint16) * 100)
                (label_dir / f"{name}_gtFine_polygons.json").write_text("{}")
                names[split].append(name)
    return names


@pytest.fixture
def download(tmp_path):
    """(root, {split: [names]}) of a fake download in a folder not named like any spec."""
    root = tmp_path / "download"
    return root, write_cityscapes(root)


def test_table_matches_labels_py_and_spec_order():
    assert {label_id: train_id for _, label_id, train_id in LABELS if train_id != IGNORE_INDEX} == OFFICIAL
    assert [label_id for _, label_id, _ in LABELS] == list(range(34))
    trained = sorted((train_id, name) for name, _, train_id in LABELS if train_id != IGNORE_INDEX)
    assert [name.replace(" ", "_") for _, name in trained] == SPEC.names and len({train_id for _, _, train_id in LABELS} - {IGNORE_INDEX}) == SPEC.num_classes == 19


def test_detected_before_other_layouts(download, tmp_path):
    root, _ = download
    (root / "train").mkdir()  # an aligned split, but leftImg8bit and gtFine decide
    assert detect_layout(root).name == "cityscapes"
    (root / "gtFine").rename(root / "labels")
    assert detect_layout(root).name == "aligned"
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"cityscapes \(ROOT/leftImg8bit/"):
        detect_layout(tmp_path / "empty")


def test_pairs_across_cities_without_test(download):
    root, names = download
    raw = RawDataset(root, SPEC)
    assert raw.format == "cityscapes" and list(raw.splits) == ["train", "val"]
    assert [pair.name for pair in raw.splits["train"]] == [
        "aachen_000000_000007", "aachen_000000_000019", "aachen_000000_000100",
        "bochum_000000_000007", "bochum_000000_000019", "bochum_000000_000100"]
    for split in raw.splits:
        assert sorted(pair.name for pair in raw.splits[split]) == sorted(names[split])
        for pair in raw.splits[split]:
            assert (pair.photo, pair.label) == (photo_path(root, split, pair.name), label_path(root, split, pair.name))


def test_label_ids_decode_to_train_ids(download):
    root, _ = download
    pair = RawDataset(root, SPEC).splits["train"][0]
    every_id = np.resize(np.arange(34, dtype=np.uint8), (8, 16))
    every_id[0, :4] = [7, 26, 0, 33]
    save(pair.label, every_id)
    photo, mask, off_palette = RawDataset(root, SPEC).read(pair)
    assert photo.shape == (8, 16, 3) and mask.dtype == np.uint8 and off_palette is None
    assert mask[0, :4].tolist() == [0, 13, IGNORE_INDEX, 18]
    expected = np.vectorize(lambda label_id: OFFICIAL.get(label_id, IGNORE_INDEX))(every_id)
    assert (mask == expected).all()


def test_split_plan_uses_val_as_test_and_carves_val_from_train(download):
    root, _ = download
    raw = RawDataset(root, SPEC)
    plan = split_plan(raw, 0.34)
    assert plan["test"] == raw.splits["val"]
    assert len(plan["val"]) == 2 and len(plan["train"]) == 4
    assert set(plan["train"]) | set(plan["val"]) == set(raw.splits["train"])


@pytest.mark.parametrize("label, expected", [
    (np.full((8, 16), 34, np.uint8), "values [34] are not Cityscapes label ids 0..33"),
    (np.zeros((8, 16, 3), np.uint8), "mode RGB"),
    (np.zeros((8, 16), np.uint16), "more than 8 bits"),
    (np.zeros((4, 16), np.uint8), "differs from its photo"),
])
def test_bad_label_names_the_file(download, label, expected):
    root, _ = download
    pair = RawDataset(root, SPEC).splits["val"][1]
    save(pair.label, label)
    with pytest.raises(UserError) as err:
        RawDataset(root, SPEC).read(pair)
    message = str(err.value)
    assert message.startswith(f"{pair.label}: ") and expected in message and "\n" not in message


@pytest.mark.parametrize("remove", ["label", "photo"])
def test_unpaired_file_names_its_missing_partner(download, remove):
    root, _ = download
    name = "bochum_000000_000019"
    (label_path if remove == "label" else photo_path)(root, "train", name).unlink()
    kept, missing = ((photo_path, label_path) if remove == "label" else (label_path, photo_path))
    with pytest.raises(UserError) as err:
        RawDataset(root, SPEC)
    assert str(err.value).startswith(f"{kept(root, 'train', name)}: has no partner "
                                     f"{missing(root, 'train', name).name} in {missing(root, 'train', name).parent}")


def test_missing_val_and_wrong_spec_are_refused(download):
    root, _ = download
    with pytest.raises(UserError, match="cityscapes layout decodes to 19 classes, but spec 'facades' has 12;"):
        RawDataset(root, load_spec("facades"))
    for part in ("leftImg8bit", "gtFine"):
        (root / part / "val").rename(root / part / "other")
    with pytest.raises(UserError, match="missing split 'val' \\(cityscapes layout\\)"):
        RawDataset(root, SPEC)


def test_data_check_names_layout_and_spec(download, capsys):
    root, _ = download
    main(["data", "check", str(root)])
    report = capsys.readouterr().out
    assert "format:  cityscapes (ROOT/leftImg8bit/<split>/<city>/*_leftImg8bit.png photos" in report
    assert "spec:    cityscapes (built-in, matched by the cityscapes layout): 19 classes" in report
    lines = [line.split() for line in report.splitlines()]
    assert ["train", "6"] in [line[:2] for line in lines] and ["val", "6"] in [line[:2] for line in lines]
    assert "(--dataset cityscapes)" in check_dataset(root, "cityscapes")
