"""`seg-p2p segment`: labels at each photo's own size, the same bytes on every run, and bad inputs refused with one
line and nothing written (members, `learned` and `joint` on a dataset of varied sizes: test_any_size.py)."""

import os

import numpy as np
import pytest
from conftest import train_argv
from PIL import ExifTags, Image

from seg_p2p.cli import main


@pytest.fixture(scope="module")
def member(workspace):
    """A tiny unet_l1 trained for one epoch, in the run layout segment reads."""
    folder = workspace / "runs" / "seed0" / "members" / "unet_l1"
    main(train_argv(workspace, folder / "train", member="unet_l1"))
    return folder


def photos(folder, sizes=((45, 77), (32, 32), (100, 20))):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


def segment(workspace, model, out, *inputs, extra=()):
    try:
        main(["--params", str(workspace / "params.yaml"), "segment", "--model", str(model), "--out", str(out),
              "--data", str(workspace / "data"), *extra, *map(str, inputs)])
        return 0
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("mode", ["resize", "slide"])
def test_labels_come_out_at_each_photos_size_and_repeat_exactly(workspace, member, tmp_path, mode):
    folder = photos(tmp_path / "in")
    assert segment(workspace, member, tmp_path / "a", folder, extra=("--mode", mode)) == 0
    assert segment(workspace, member, tmp_path / "b", folder, extra=("--mode", mode)) == 0
    for photo in folder.iterdir():
        for suffix in ("", "_colour", "_overlay"):
            first = tmp_path / "a" / f"{photo.stem}{suffix}.png"
            assert Image.open(first).size == Image.open(photo).size
            assert first.read_bytes() == (tmp_path / "b" / first.name).read_bytes()


def test_a_photo_with_an_exif_orientation_is_labelled_upright(workspace, member, tmp_path):
    """Stored 20 wide and 45 high with EXIF orientation 6, it shows 45 wide and 20 high: so do its labels."""
    tmp_path.joinpath("in").mkdir()
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    stored = np.random.default_rng(0).integers(0, 256, (45, 20, 3), dtype=np.uint8)
    Image.fromarray(stored).save(tmp_path / "in" / "phone.jpg", exif=exif)
    assert segment(workspace, member, tmp_path / "out", tmp_path / "in" / "phone.jpg") == 0
    for suffix in ("", "_colour", "_overlay"):
        assert Image.open(tmp_path / "out" / f"phone{suffix}.png").size == (45, 20)


def assert_refused(capsys, code, *expected):
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("seg-p2p: error: ")
    for text in expected:
        assert text in err[-1]


def test_an_unreadable_input_is_refused_before_anything_is_written(workspace, member, tmp_path, capsys):
    folder = photos(tmp_path / "in")
    broken = folder / "p9.png"
    broken.write_bytes((folder / "p0.png").read_bytes()[:100])
    code = segment(workspace, member, tmp_path / "out", folder / "p1.png", folder)
    assert_refused(capsys, code, str(broken), "unreadable or truncated")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["empty folder", "no model", "missing input", "repeated name", "too large",
                                  "link to nothing in a folder", "link to nothing named", "a pipe in a folder"])
def test_bad_arguments_are_refused(workspace, member, tmp_path, capsys, case):
    """Every input that cannot be read is named before anything is written, never skipped."""
    folder = photos(tmp_path / "in")
    model, inputs, expected = member, [folder], ()
    if case == "empty folder":
        (tmp_path / "empty").mkdir()
        inputs, expected = [tmp_path / "empty"], (f"{tmp_path / 'empty'}: holds no image files",)
    elif case == "no model":
        model, expected = tmp_path, (f"{tmp_path}: holds no trained model", "runs/seed<K>/members/<member>")
    elif case == "missing input":
        inputs, expected = [tmp_path / "nope.png"], (f"{tmp_path / 'nope.png'}: no such file or folder",)
    elif case == "too large":  # over data.max_image_pixels (PIL's limit by default), refused from its header
        Image.new("1", (10000, 9000)).save(folder / "p9.png")
        expected = (f"{folder / 'p9.png'}: 10000x9000 is 90,000,000 pixels", "data.max_image_pixels")
    elif case.startswith("link to nothing"):  # a photo moved or deleted after the link was made
        link = folder / "gone.jpg"
        link.symlink_to(tmp_path / "moved.jpg")
        inputs = [folder] if case.endswith("in a folder") else [folder / "p0.png", link]
        expected = (f"{link}: a link to nothing (it points to {tmp_path / 'moved.jpg'})", "remove the link")
    elif case == "a pipe in a folder":
        os.mkfifo(folder / "p9.png")
        expected = (f"{folder / 'p9.png'}: not a regular file",)
    else:
        photos(tmp_path / "other")
        inputs, expected = [folder, tmp_path / "other"], ("p0.png: same name as", "different --out folders")
    assert_refused(capsys, segment(workspace, model, tmp_path / "out", *inputs), *expected)
    assert not (tmp_path / "out").exists()


def test_a_strategy_without_its_training_is_refused(workspace, member, tmp_path, capsys):
    strategy = workspace / "runs" / "seed0" / "ensembles" / "learned"
    strategy.mkdir(parents=True, exist_ok=True)
    code = segment(workspace, strategy, tmp_path / "out", photos(tmp_path / "in"))
    assert_refused(capsys, code, f"{strategy}: strategy 'learned' has not been trained here", "dvc repro ensemble")
