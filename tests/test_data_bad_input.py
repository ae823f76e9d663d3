"""Every bad input a user can hand `seg-p2p prepare` / `data check`: exit 2, one line naming the file, nothing written.

The safe conversions (grey photo, opaque RGBA photo, palette-mode index mask, palette-mode colour label, a photo
with an EXIF orientation) must prepare fine.
"""

import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml
from conftest import write_ade20k, write_voc
from PIL import ExifTags, Image

from seg_p2p.cli import main
from seg_p2p.data.prepare import PreparedData
from seg_p2p.data.settings import PIL_PIXEL_LIMIT, DataConfig
from seg_p2p.data.spec import load_spec

SPEC = {"name": "tiny", "void_value": 3, "classes": [{"name": "red", "colour": [255, 0, 0]},
                                                     {"name": "green", "colour": [0, 255, 0]},
                                                     {"name": "blue", "colour": [0, 0, 255]}]}
PALETTE = np.array([c["colour"] for c in SPEC["classes"]], dtype=np.uint8)


def mask(seed=0):
    return np.random.default_rng(seed).integers(0, 3, (3, 4)).repeat(4, 0).repeat(4, 1).astype(np.uint8)


def photo(seed=0):
    return np.random.default_rng(seed + 100).integers(0, 256, (12, 16, 3), dtype=np.uint8)


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def paired(tmp_path):
    """A valid paired-layout dataset: train 3, test 2."""
    root = tmp_path / "raw"
    for split, count in (("train", 3), ("test", 2)):
        for i in range(count):
            save(root / "A" / split / f"{i}.png", photo(i))
            save(root / "B" / split / f"{i}.png", PALETTE[mask(i)])
    return root


@pytest.fixture
def indexed(tmp_path):
    """A valid index-layout dataset: train 3, test 2, void value 3."""
    root = tmp_path / "raw"
    for split, count in (("train", 3), ("test", 2)):
        for i in range(count):
            save(root / split / f"{i}.png", photo(i))
            save(root / f"{split}annot" / f"{i}.png", mask(i))
    return root


def run(tmp_path, root, spec=None, command="prepare"):
    """Run the CLI on root; return (exit code, stderr lines, out folder)."""
    spec_path = tmp_path / "spec.yaml"
    if not spec_path.exists():
        spec_path.write_text(yaml.safe_dump(spec or SPEC))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"dataset": str(spec_path), "root": str(root)}}))
    out = tmp_path / "out" / "prepared"
    argv = (["--params", str(params), "prepare", "--out", str(out)] if command == "prepare"
            else ["data", "check", str(root), "--dataset", str(spec_path)])
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, out


def assert_refused(tmp_path, capsys, root, *expected, command="prepare"):
    code, out = run(tmp_path, root, command=command)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    error = err.splitlines()[-1]  # after any progress bars
    assert error.startswith("seg-p2p: error: ") and err.count("seg-p2p: error: ") == 1
    for text in expected:
        assert str(text) in error
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))  # nothing written


def assert_prepared(tmp_path, capsys, root):
    code, out = run(tmp_path, root)
    assert code == 0, capsys.readouterr().err
    return PreparedData(out)


def train_item(data, name):
    """(photo, mask) of a raw train file, which prepare may have moved to the carved val split."""
    split = "train" if name in data.names("train") else "val"
    i = data.names(split).index(name)
    return data.photos(split)[i], data.masks(split)[i]


def test_valid_fixtures_prepare(tmp_path, capsys, paired):
    data = assert_prepared(tmp_path, capsys, paired)
    assert (data.masks("test")[1] == mask(1)).all()


def test_missing_split(tmp_path, capsys, paired):
    for side in "AB":
        (paired / side / "test").rename(paired / side / "extra")
    assert_refused(tmp_path, capsys, paired, "missing split 'test'")


def test_missing_train(tmp_path, capsys, indexed):
    for folder in ("train", "trainannot"):
        for path in (indexed / folder).iterdir():
            path.unlink()
        (indexed / folder).rmdir()
    assert_refused(tmp_path, capsys, indexed, "missing split 'train'")


def test_empty_split(tmp_path, capsys, paired):
    for side in "AB":
        for path in (paired / side / "test").iterdir():
            path.unlink()
    assert_refused(tmp_path, capsys, paired, paired / "A" / "test", "empty split")


def test_missing_label_folder(tmp_path, capsys, indexed):
    for path in (indexed / "testannot").iterdir():
        path.unlink()
    (indexed / "testannot").rmdir()
    assert_refused(tmp_path, capsys, indexed, indexed / "testannot", "missing")


@pytest.mark.parametrize("damage", ["garbage", "truncated_png", "truncated_jpeg"])
def test_unreadable_or_truncated_image(tmp_path, capsys, paired, damage):
    target = paired / "A" / "train" / "1.png"
    if damage == "garbage":
        target.write_bytes(b"this is not an image")
    elif damage == "truncated_png":
        target.write_bytes(target.read_bytes()[:200])
    else:
        target.unlink()
        target = target.with_suffix(".jpg")
        Image.fromarray(photo(1)).save(target, quality=95)
        target.write_bytes(target.read_bytes()[:300])
    assert_refused(tmp_path, capsys, paired, target, "unreadable or truncated")


def test_sizes_differ(tmp_path, capsys, paired):
    save(paired / "B" / "train" / "2.png", PALETTE[mask(2)][:8])
    assert_refused(tmp_path, capsys, paired, paired / "B" / "train" / "2.png", "differs from its photo")


def test_split_of_mixed_sizes_prepares_at_native_sizes(tmp_path, capsys, paired):
    save(paired / "A" / "test" / "1.png", photo(1)[:8])
    save(paired / "B" / "test" / "1.png", PALETTE[mask(1)][:8])
    data = assert_prepared(tmp_path, capsys, paired)
    assert data.sizes("test") == [(12, 16), (8, 16)]
    assert (data.photos("test")[1] == photo(1)[:8]).all() and (data.masks("test")[1] == mask(1)[:8]).all()


@pytest.mark.parametrize("side", ["A", "B"])
def test_no_partner(tmp_path, capsys, paired, side):
    (paired / ("B" if side == "A" else "A") / "train" / "1.png").unlink()
    assert_refused(tmp_path, capsys, paired, paired / side / "train" / "1.png", "has no partner")


def test_label_mostly_off_palette(tmp_path, capsys, paired):
    save(paired / "B" / "test" / "1.png", photo(7))  # a photo where a label belongs
    assert_refused(tmp_path, capsys, paired, paired / "B" / "test" / "1.png", "not near any 'tiny' label colour")


def test_index_values_beyond_classes(tmp_path, capsys, indexed):
    bad = mask(1)
    bad[0, 0] = 7
    save(indexed / "trainannot" / "1.png", bad)
    assert_refused(tmp_path, capsys, indexed, indexed / "trainannot" / "1.png", "[7]", "void value 3")


def test_grey_photo_is_converted(tmp_path, capsys, paired):
    save(paired / "A" / "train" / "0.png", photo(0)[..., 0])
    data = assert_prepared(tmp_path, capsys, paired)
    first = train_item(data, "0")[0]
    assert (first[..., 0] == first[..., 2]).all() and (first[..., 0] == photo(0)[..., 0]).all()


@pytest.mark.parametrize("opaque", [True, False])
def test_rgba_photo_converted_only_if_opaque(tmp_path, capsys, paired, opaque):
    rgba = np.concatenate([photo(0), np.full((12, 16, 1), 255, np.uint8)], axis=2)
    rgba[0, 0, 3] = 255 if opaque else 128
    save(paired / "A" / "train" / "0.png", rgba)
    if opaque:
        data = assert_prepared(tmp_path, capsys, paired)
        assert (train_item(data, "0")[0] == photo(0)).all()
    else:
        assert_refused(tmp_path, capsys, paired, paired / "A" / "train" / "0.png", "transparent")


@pytest.mark.parametrize("kind", ["grey16_photo", "rgb16_photo", "mask16"])
def test_16_bit_refused(tmp_path, capsys, indexed, kind):
    if kind == "grey16_photo":
        target = indexed / "train" / "1.png"
        Image.fromarray(photo(1)[..., 0].astype(np.uint16) * 257).save(target)
    elif kind == "rgb16_photo":
        target = indexed / "train" / "1.png"
        cv2.imwrite(str(target), photo(1).astype(np.uint16) * 257)
    else:
        target = indexed / "trainannot" / "1.png"
        Image.fromarray(mask(1).astype(np.uint16)).save(target)
    assert_refused(tmp_path, capsys, indexed, target, "8 bits")


def test_16_bit_colour_label_refused(tmp_path, capsys, paired):
    target = paired / "B" / "train" / "1.png"
    cv2.imwrite(str(target), PALETTE[mask(1)][..., ::-1].astype(np.uint16) * 257)
    assert_refused(tmp_path, capsys, paired, target, "8 bits")


def save_palette_label(path, classes, colours):
    """A palette PNG of class map `classes` whose index i shows colours[i], stored in reverse index order so that
    only its colours, not its indices, give the classes."""
    image = Image.fromarray((len(colours) - 1 - classes).astype(np.uint8), mode="L")
    image.putpalette(np.asarray(colours[::-1], dtype=np.uint8).ravel().tolist())
    image.save(path)


def test_palette_colour_labels_are_read_by_their_colours(tmp_path, capsys, paired):
    for split, i in (("train", 1), ("test", 0)):
        save_palette_label(paired / "B" / split / f"{i}.png", mask(i), PALETTE)
    assert Image.open(paired / "B" / "train" / "1.png").mode == "P"
    assert run(tmp_path, paired, command="check")[0] == 0, capsys.readouterr().err
    data = assert_prepared(tmp_path, capsys, paired)
    assert (train_item(data, "1")[1] == mask(1)).all() and (data.masks("test")[0] == mask(0)).all()


def test_palette_label_of_other_colours_is_off_palette(tmp_path, capsys, paired):
    target = paired / "B" / "train" / "1.png"
    save_palette_label(target, mask(1), [[128, 128, 128], [255, 255, 0], [0, 255, 255]])
    for command in ("prepare", "check"):
        assert_refused(tmp_path, capsys, paired, target, "not near any 'tiny' label colour", command=command)


def save_exif_rotated(path, upright):
    """`upright` stored turned a quarter left, with EXIF orientation 6 (viewers turn it a quarter right)."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    Image.fromarray(np.rot90(upright)).save(path, exif=exif)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_rotated_photo_pairs_with_its_upright_label(tmp_path, capsys, paired, suffix):
    target = paired / "A" / "test" / "1.png"
    target.unlink()
    save_exif_rotated(target.with_suffix(suffix), photo(1))
    assert Image.open(target.with_suffix(suffix)).size == (12, 16)  # stored 12 wide, 16 high; upright 16x12
    assert run(tmp_path, paired, command="check")[0] == 0, capsys.readouterr().err
    data = assert_prepared(tmp_path, capsys, paired)
    assert data.sizes("test") == [(12, 16), (12, 16)] and (data.masks("test")[1] == mask(1)).all()
    if suffix == ".png":  # lossless: the very pixels, upright
        assert (data.photos("test")[1] == photo(1)).all()


@pytest.fixture(scope="module")
def huge_photo(tmp_path_factory):
    """A 1-bit PNG of 10000x9000 pixels, just over PIL's limit of 89,478,485: 12 kB on disk."""
    path = tmp_path_factory.mktemp("huge") / "1.png"
    Image.new("1", (10000, 9000)).save(path)
    return path


@pytest.mark.parametrize("command", ["prepare", "check"])
def test_image_over_max_image_pixels_refused(tmp_path, capsys, paired, huge_photo, command):
    target = paired / "A" / "train" / "1.png"
    target.write_bytes(huge_photo.read_bytes())
    assert_refused(tmp_path, capsys, paired, target, "10000x9000 is 90,000,000 pixels",
                   "more than data.max_image_pixels (89,478,485)", "null: no limit", command=command)


def test_data_check_outside_a_project_applies_the_default_limit(tmp_path, capsys, monkeypatch, paired, huge_photo):
    """No params file where `data check` runs (a dataset checked before any project exists): PIL's default."""
    (paired / "A" / "train" / "1.png").write_bytes(huge_photo.read_bytes())
    monkeypatch.chdir(tmp_path)
    assert_refused(tmp_path, capsys, paired, paired / "A" / "train" / "1.png",
                   "more than data.max_image_pixels (89,478,485)", command="check")


def test_palette_mode_mask_uses_indices(tmp_path, capsys, indexed):
    image = Image.fromarray(mask(1))
    image.putpalette([9, 9, 9, 200, 10, 10, 10, 200, 10])  # display colours unrelated to the class ids
    image.save(indexed / "trainannot" / "1.png")
    data = assert_prepared(tmp_path, capsys, indexed)
    assert (train_item(data, "1")[1] == mask(1)).all()


def test_unknown_key_in_spec(tmp_path, capsys, paired):
    (tmp_path / "spec.yaml").write_text(json.dumps({**SPEC, "ignore": 3}))
    assert_refused(tmp_path, capsys, paired, tmp_path / "spec.yaml", "unknown key 'ignore'")


def test_aligned_odd_width(tmp_path, capsys):
    root = tmp_path / "raw"
    for split in ("train", "test"):
        save(root / split / "0.png", np.concatenate([photo(0), PALETTE[mask(0)][:, :15]], axis=1))
    assert_refused(tmp_path, capsys, root, root / "train" / "0.png", "odd width")


def test_data_check_refuses_too(tmp_path, capsys, paired):
    (paired / "B" / "train" / "1.png").unlink()
    assert_refused(tmp_path, capsys, paired, paired / "A" / "train" / "1.png", "has no partner", command="check")
    assert_refused(tmp_path, capsys, tmp_path / "nowhere", "not found", command="check")


def test_the_default_limit_is_pils():
    """PIL_PIXEL_LIMIT restates PIL's Image.MAX_IMAGE_PIXELS, which seg_p2p's readers replace: asked of a fresh PIL."""
    pil = subprocess.run([sys.executable, "-c", "from PIL import Image; print(Image.MAX_IMAGE_PIXELS)"],
                         capture_output=True, text=True, check=True)
    assert int(pil.stdout) == PIL_PIXEL_LIMIT == DataConfig().max_image_pixels


@pytest.mark.slow
def test_200_megapixels_allowed_by_the_setting_in_bounded_memory(tmp_path, paired):
    """data.max_image_pixels: null lets a 20000x10000 photo (1-bit) with its palette colour label through `data check`
    and `prepare`, each run in a process of its own whose peak memory stays under 24 bytes per pixel of the image
    (measured: 14 and 17, the prepared cache's written pages included); 30 s on 2 cores."""
    width, height = 20000, 10000
    Image.new("1", (width, height)).save(paired / "A" / "test" / "1.png")
    save_palette_label(paired / "B" / "test" / "1.png", np.ones((height, width), np.uint8), PALETTE)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"dataset": str(tmp_path / "spec.yaml"), "root": str(paired),
                                               "max_image_pixels": None}}))
    measure = ("import resource, sys; from seg_p2p.cli import main; main(sys.argv[1:]); "
               "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    for argv in (["data", "check", str(paired), "--dataset", str(tmp_path / "spec.yaml")],
                 ["prepare", "--out", str(tmp_path / "out")]):
        done = subprocess.run([sys.executable, "-c", measure, "--params", str(params), *argv],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        assert int(done.stdout.split()[-1]) * 1024 < 24 * width * height  # ru_maxrss is in kB
    data = PreparedData(tmp_path / "out")
    assert data.sizes("test")[1] == (height, width) and (data.masks("test")[1][::999, ::999] == 1).all()
    shutil.rmtree(tmp_path / "out")  # 800 MB


def damage_voc(root):
    (root / "JPEGImages" / "2007_000039.jpg").unlink()
    return root / "JPEGImages" / "2007_000039.jpg", "listed in", "train.txt but missing"


def empty_voc_list(root):
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n")
    return root / "ImageSets" / "Segmentation" / "val.txt", "lists no images"


def no_voc_val(root):
    (root / "ImageSets" / "Segmentation" / "val.txt").unlink()
    return root, "missing split 'val' (voc layout); add", "val.txt"


def ade_value_beyond_150(root):
    target = root / "annotations" / "validation" / "ADE_val_00000002.png"
    save(target, np.full((12, 16), 151, np.uint8))
    return target, "values [151] are not ADE20K classes 0..150"


def ade_colour_annotation(root):
    target = root / "annotations" / "training" / "ADE_train_00000002.png"
    save(target, np.zeros((12, 16, 3), np.uint8))
    return target, "annotation has mode RGB"


def no_ade_val(root):
    for folder in ("images", "annotations"):
        (root / folder / "validation").rename(root / folder / "other")
    return root, "missing split 'val' (ade20k layout); add", "annotations/validation and"


@pytest.mark.parametrize("layout, damage", [
    ("voc", damage_voc), ("voc", empty_voc_list), ("voc", no_voc_val),
    ("ade20k", ade_value_beyond_150), ("ade20k", ade_colour_annotation), ("ade20k", no_ade_val),
])
def test_published_layout_damaged(tmp_path, capsys, layout, damage):
    root = tmp_path / "raw"
    (write_voc if layout == "voc" else write_ade20k)(root)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(load_spec(layout).model_dump()))
    assert_refused(tmp_path, capsys, root, *damage(root))


@pytest.mark.parametrize("layout, classes", [("voc", 21), ("ade20k", 150)])
def test_published_layout_with_another_spec(tmp_path, capsys, layout, classes):
    root = tmp_path / "raw"
    (write_voc if layout == "voc" else write_ade20k)(root)
    assert_refused(tmp_path, capsys, root, f"{layout} layout decodes to {classes} classes, but spec 'tiny' has 3",
                   f"use the built-in {layout} spec")
