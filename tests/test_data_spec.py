"""Dataset specs and colour-label decoding."""

import io

import numpy as np
import pytest
from conftest import shared_dataset
from PIL import Image

from seg_p2p.data.spec import (BUILTIN_SPECS, IGNORE_INDEX, MAX_OFF_PALETTE_SHARE, DatasetSpec, decode_colour_labels,
                               load_spec, match_palette)
from seg_p2p.errors import UserError


def test_builtin_specs():
    assert set(BUILTIN_SPECS) == {"synthetic", "facades", "camvid", "cityscapes", "voc", "ade20k"}
    facades, camvid, cityscapes = load_spec("facades"), load_spec("camvid"), load_spec("cityscapes")
    assert facades.num_classes == 12 and facades.names[2] == "window" and facades.void_value is None
    assert camvid.num_classes == 11 and camvid.void_value == 11
    assert cityscapes.num_classes == 19 and [0, 0, 0] in cityscapes.void_colours
    assert load_spec("synthetic").num_classes >= 6
    assert facades.palette.dtype == np.uint8 and facades.palette.shape == (12, 3)
    assert facades.palette[0].tolist() == [0, 0, 222]


def write_spec(tmp_path, text):
    path = tmp_path / "dataset.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, expected", [
    ("name: x\nclasses: [{name: a, colour: [1, 2, 3]}]\nvoid_colour: [[0, 0, 0]]\n", "unknown key 'void_colour'"),
    ("name: x\nclasses: [{name: a, colour: [1, 2, 3], id: 4}]\n", "unknown key 'classes.0.id'"),
    ("name: x\nclasses: [{name: a, colour: [1, 2]}]\n", "classes.0.colour"),
    ("name: x\nclasses: [{name: a, colour: [1, 2, 300]}]\n", "classes.0.colour.2"),
    ("name: x\nclasses: [{name: a, colour: [1, 2, 3]}, {name: b, colour: [1, 2, 3]}]\n", "colours repeat"),
    ("name: x\nclasses: [{name: a, colour: [1, 2, 3]}, {name: a, colour: [4, 5, 6]}]\n", "names repeat"),
    ("name: x\nclasses: [{name: a, colour: [1, 2, 3]}, {name: b, colour: [4, 5, 6]}]\nvoid_value: 1\n", "void_value"),
    ("name: x\nclasses: []\n", "classes"),
    ("name: x\nclasses: [{name: a, colour: [1, 2, 3]}]\nphoto_side: top\n", "photo_side"),
])
def test_bad_spec_yaml_names_file_and_key(tmp_path, text, expected):
    path = write_spec(tmp_path, text)
    with pytest.raises(UserError) as err:
        load_spec(path)
    assert path in str(err.value) and expected in str(err.value)


def test_spec_yaml_and_unknown_name(tmp_path):
    spec = load_spec(write_spec(tmp_path, "name: mine\nclasses: [{name: a, colour: [1, 2, 3]}]\nvoid_value: 255\n"))
    assert spec.name == "mine" and spec.num_classes == 1
    with pytest.raises(UserError, match="no such dataset spec"):
        load_spec("imagenet")


def blocks(spec, ids):
    """Colour label image of 8x8 blocks with the given class ids (IGNORE_INDEX: the first void colour)."""
    colours = np.concatenate([spec.palette, np.array(spec.void_colours[:1], dtype=np.uint8).reshape(-1, 3)])
    index = np.where(np.array(ids) == IGNORE_INDEX, spec.num_classes, ids)
    return colours[index].repeat(8, 0).repeat(8, 1), np.array(ids, dtype=np.uint8).repeat(8, 0).repeat(8, 1)


def test_decode_exact_and_void():
    spec = load_spec("cityscapes")
    rgb, expected = blocks(spec, [[0, 13, IGNORE_INDEX], [10, 18, 2]])
    assert (decode_colour_labels(rgb, spec, "label.png")[0] == expected).all()


def test_decode_jpeg_bleeding():
    """Blurred boundaries, noise and a real 4:2:0 JPEG round trip: block interiors still decode exactly."""
    spec = load_spec("facades")
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 12, (6, 6))
    rgb, expected = blocks(spec, ids)
    soft = rgb.astype(float)
    soft[1:-1, 1:-1] = (soft[:-2, 1:-1] + soft[2:, 1:-1] + soft[1:-1, :-2] + soft[1:-1, 2:] + 4 * soft[1:-1, 1:-1]) / 8
    soft += rng.normal(0, 4, soft.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(soft, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=75)
    bled = np.asarray(Image.open(buffer))
    decoded, _ = decode_colour_labels(bled, spec, "label.jpg")
    interior = np.zeros((8, 8), bool)
    interior[2:-2, 2:-2] = True
    interior = np.tile(interior, (6, 6))
    assert (decoded[interior] == expected[interior]).all()
    assert (decoded == expected).mean() > 0.8  # boundary pixels are ambiguous, as in the real labels


def test_off_palette_threshold():
    """Up to ~56% bleeding (the worst facades label) passes; a mostly off-palette image fails."""
    spec = load_spec("facades")
    rgb, _ = blocks(spec, np.arange(12).reshape(3, 4))
    midpoint = ((spec.palette[0].astype(int) + spec.palette[11]) // 2).astype(np.uint8)  # ~130 units from both
    flat = rgb.reshape(-1, 3).copy()
    flat[: int(0.6 * len(flat))] = midpoint
    assert match_palette(flat.reshape(rgb.shape), spec)[1].mean() == pytest.approx(0.6, abs=0.01)
    decode_colour_labels(flat.reshape(rgb.shape), spec, "bled.jpg")
    flat[: int((MAX_OFF_PALETTE_SHARE + 0.05) * len(flat))] = midpoint
    with pytest.raises(UserError, match="bled.jpg"):
        decode_colour_labels(flat.reshape(rgb.shape), spec, "bled.jpg")


def test_photo_as_label_refused():
    spec = load_spec("facades")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    with pytest.raises(UserError, match="photo.png.*not near any 'facades' label colour"):
        decode_colour_labels(noise, spec, "photo.png")


def test_real_facades_labels_pass_and_photos_fail():
    root = shared_dataset("facades")
    spec = load_spec("facades")
    worst = np.asarray(Image.open(root / "B/train/136.jpg").convert("RGB"))  # ~56% pixels off the palette
    assert match_palette(worst, spec)[1].mean() > 0.5
    decode_colour_labels(worst, spec, "136.jpg")
    photo = np.asarray(Image.open(root / "A/train/136.jpg").convert("RGB"))
    with pytest.raises(UserError):
        decode_colour_labels(photo, spec, "136.jpg")


def test_spec_round_trips_through_json():
    spec = load_spec("cityscapes")
    assert DatasetSpec.model_validate(spec.model_dump()) == spec
