"""Dataset layouts: every registered layout meets one contract (as test_extending.py's members: a layout gets the
whole contract by appearing in the registry), on a tiny tree of 8x8 images written here per layout; and a layout
added from this module, with its own spec file, runs through `data check` and `prepare` like a built-in one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from seg_p2p.cli import main
from seg_p2p.data.check import check_dataset
from seg_p2p.data.layouts import LAYOUTS, SPLITS, Layout, detect_layout, register_layout
from seg_p2p.data.layouts.ade20k import SPLIT_FOLDERS
from seg_p2p.data.layouts.cityscapes import LABELS
from seg_p2p.data.prepare import PreparedData, prepare
from seg_p2p.data.settings import DataConfig
from seg_p2p.data.spec import IGNORE_INDEX, load_spec
from seg_p2p.errors import UserError

BUILT_IN_LAYOUTS = list(LAYOUTS)
SIZE = 8
COUNTS = {"train": 3, "val": 2, "test": 2}  # published layouts get train and val only
SPEC = {"name": "tiny", "void_value": 3, "void_colours": [[255, 255, 255]],
        "classes": [{"name": "red", "colour": [255, 0, 0]}, {"name": "green", "colour": [0, 255, 0]},
                    {"name": "blue", "colour": [0, 0, 255]}]}
COLOURS = np.zeros((256, 3), np.uint8)
COLOURS[[0, 1, 2, IGNORE_INDEX]] = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]
CITYSCAPES_ID = {train_id: label_id for _, label_id, train_id in reversed(LABELS)}  # void (255) -> id 0
TINYSET_VOID = 200


class TinySet(Layout):
    """The smallest published dataset: ROOT/<split>/images/NAME.png photos, ROOT/<split>/labels/NAME.png class
    indices with void 200, read with the spec file it ships."""

    description = "ROOT/<split>/images/NAME.png photos, ROOT/<split>/labels/NAME.png class indices"
    void = f"value {TINYSET_VOID}"

    @classmethod
    def matches(cls, root: Path) -> bool:
        return (root / "train" / "images").is_dir()

    def split_folders(self, split: str) -> tuple[Path, Path]:
        return self.root / split / "images", self.root / split / "labels"

    def decode_label(self, image: Image.Image, path: Path) -> tuple[np.ndarray, None]:
        ids = np.array(image, dtype=np.uint8)
        ids[ids == TINYSET_VOID] = IGNORE_INDEX
        return ids, None


@pytest.fixture
def tinyset(tmp_path):
    """TinySet registered before every built-in layout, its spec file beside the dataset."""
    spec = tmp_path / "tinyset.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "name": "tinyset", "void_value": None, "void_colours": []}))
    TinySet.published_spec = str(spec)
    register_layout("tinyset", priority=5)(TinySet)
    yield "tinyset"
    del LAYOUTS["tinyset"]


# ---- a tiny tree per layout ------------------------------------------------------------------------------------

def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_aligned(root, split, name, photo, ids):
    save(root / split / f"{name}.png", np.concatenate([photo, COLOURS[ids]], 1))


def write_paired(root, split, name, photo, ids):
    save(root / "A" / split / f"{name}.png", photo)
    save(root / "B" / split / f"{name}.png", COLOURS[ids])


def write_index(root, split, name, photo, ids):
    save(root / split / f"{name}.png", photo)
    save(root / f"{split}annot" / f"{name}.png", np.where(ids == IGNORE_INDEX, SPEC["void_value"], ids))


def write_cityscapes(root, split, name, photo, ids):
    save(root / "leftImg8bit" / split / "aachen" / f"{name}_leftImg8bit.png", photo)
    label_ids = np.vectorize(CITYSCAPES_ID.get)(ids).astype(np.uint8)
    save(root / "gtFine" / split / "aachen" / f"{name}_gtFine_labelIds.png", label_ids)


def write_voc(root, split, name, photo, ids):
    save(root / "JPEGImages" / f"{name}.jpg", photo)
    save(root / "SegmentationClass" / f"{name}.png", ids)  # 255 is VOC's void border
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    with listing.open("a") as handle:
        handle.write(f"{name}\n")


def write_ade20k(root, split, name, photo, ids):
    save(root / "images" / SPLIT_FOLDERS[split] / f"{name}.jpg", photo)
    save(root / "annotations" / SPLIT_FOLDERS[split] / f"{name}.png", np.where(ids == IGNORE_INDEX, 0, ids + 1))


def write_tinyset(root, split, name, photo, ids):
    save(root / split / "images" / f"{name}.png", photo)
    save(root / split / "labels" / f"{name}.png", np.where(ids == IGNORE_INDEX, TINYSET_VOID, ids).astype(np.uint8))


WRITERS = {"aligned": write_aligned, "paired": write_paired, "index": write_index, "cityscapes": write_cityscapes,
           "voc": write_voc, "ade20k": write_ade20k, "tinyset": write_tinyset}


def write_tree(root: Path, layout: type[Layout]) -> dict[str, dict[str, np.ndarray]]:
    """A few 8x8 pairs per split in `layout`; returns {split: {name: class ids, void as IGNORE_INDEX}}."""
    rng, written = np.random.default_rng(0), {}
    for split in ("train", "val") if layout.published_spec else SPLITS:
        written[split] = {}
        for i in range(1, COUNTS[split] + 1):
            ids = rng.choice([0, 1, 2, IGNORE_INDEX], (2, 2)).repeat(4, 0).repeat(4, 1).astype(np.uint8)
            ids[0, 0] = IGNORE_INDEX  # every label holds void
            photo = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
            WRITERS[layout.name](root, split, f"{split[:2]}{i}", photo, ids)
            written[split][f"{split[:2]}{i}"] = ids
    return written


def spec_of(layout: type[Layout], tmp_path: Path) -> str:
    """The spec prepare is given: a published layout's own, else the tiny spec as a file."""
    if layout.published_spec:
        return layout.published_spec
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(SPEC))
    return str(tmp_path / "tiny.yaml")


# ---- the layout contract ---------------------------------------------------------------------------------------

def test_every_registered_layout_has_a_tree_here():
    assert set(BUILT_IN_LAYOUTS) <= set(WRITERS), "a new layout: add its tree writer to WRITERS"


def test_a_folder_of_no_layout_names_every_registered_one(tinyset, tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(UserError) as error:
        detect_layout(tmp_path)
    assert all(f"{name} ({layout.description})" in str(error.value) for name, layout in LAYOUTS.items())


@pytest.mark.parametrize("name", BUILT_IN_LAYOUTS + ["tinyset"])
def test_layout_contract(name, tinyset, tmp_path):
    layout, root = LAYOUTS[name], tmp_path / "dataset"
    written = write_tree(root, layout)
    assert detect_layout(root) is layout

    spec = spec_of(layout, tmp_path)
    report = check_dataset(root, None if layout.published_spec else spec)
    assert f"format:  {name} ({layout.description})" in report
    assert f"spec:    {load_spec(spec).name} (" in report and " + void (" in report
    for split, pairs in written.items():
        assert f"{split:<8}{len(pairs):>7}  {SIZE}x{SIZE}" in report

    prepare(DataConfig(dataset=spec, root=str(root)), tmp_path / "prepared")
    data = PreparedData(tmp_path / "prepared")
    test_split = "test" if "test" in written else "val"  # without test, val becomes test and val is carved
    assert data.names("test") == list(written[test_split])
    assert sorted(data.names("train") + data.names("val")) == sorted(
        name for split, pairs in written.items() if split != test_split for name in pairs)
    expected = {name: ids for pairs in written.values() for name, ids in pairs.items()}
    for split in SPLITS:
        for name, photo, mask in zip(data.names(split), data.photos(split), data.masks(split)):
            assert photo.shape == (SIZE, SIZE, 3) and (mask == expected[name]).all(), (split, name)


# ---- a layout added from outside -------------------------------------------------------------------------------

def test_a_registered_layout_goes_through_data_check_and_prepare(tinyset, tmp_path, capsys):
    root = tmp_path / "dataset"
    written = write_tree(root, LAYOUTS["tinyset"])
    assert detect_layout(root).name == "tinyset"  # before aligned, whose split folders it also has

    main(["data", "check", str(root)])
    report = capsys.readouterr().out
    assert f"spec:    tinyset ({tmp_path / 'tinyset.yaml'}, matched by the tinyset layout): 3 classes" in report
    assert f"+ void (value {TINYSET_VOID} -> {IGNORE_INDEX})" in report

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"dataset": str(tmp_path / "tinyset.yaml"), "root": str(root)}}))
    main(["--params", str(params), "prepare", "--out", str(tmp_path / "prepared")])
    data = PreparedData(tmp_path / "prepared")
    assert data.spec.name == "tinyset" and data.names("test") == list(written["val"])

    (root / "val" / "labels" / "va1.png").unlink()
    with pytest.raises(UserError, match="va1.png: has no partner named va1.* in .*labels"):
        check_dataset(root, None)
