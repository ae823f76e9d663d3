"""Inference modes (seg_p2p/inference.py): slide agrees with resize and with the model run window by window, flip
TTA is mirror-symmetric, small photos pad or are refused, and stored probabilities stay bounded."""

import pytest
import torch
from conftest import REPO, tiny_config

from seg_p2p.config import InferenceConfig, load_config
from seg_p2p.data.spec import load_spec
from seg_p2p.errors import UserError
from seg_p2p.inference import Inference, resample, stored_size, window_starts
from seg_p2p.models import build_member

WINDOW = 32


@pytest.fixture(scope="module", params=["unet_l1", "unet_ce"])
def model(request):
    torch.manual_seed(0)
    member = build_member(tiny_config(), request.param, load_spec("synthetic"))
    member.eval()
    for _ in range(2):  # non-trivial BatchNorm statistics, so windows differ in more than their input
        member.train()
        with torch.no_grad():
            member({"photo": torch.rand(4, 3, WINDOW, WINDOW) * 2 - 1})
    return member.eval()


def inference(mode="slide", batch_size=4, **settings):
    return Inference(InferenceConfig(mode=mode, **settings), WINDOW, batch_size)


def alone(model, photo):
    with torch.no_grad():
        return model.probabilities(model({"photo": photo})).float()


def photo(height, width, seed=0):
    return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@torch.no_grad()
def test_slide_on_a_photo_of_the_window_size_equals_resize(model):
    x = photo(WINDOW, WINDOW)
    assert torch.equal(inference("slide").probabilities(model, x), inference("resize").probabilities(model, x))


@torch.no_grad()
@pytest.mark.parametrize("batch_size", [1, 3])
def test_windows_that_tile_a_photo_each_equal_the_model_on_that_window(model, batch_size):
    x = photo(2 * WINDOW, 2 * WINDOW, seed=1)
    probs = inference(batch_size=batch_size).probabilities(model, x)
    assert probs.shape == (1, model_classes(model), 2 * WINDOW, 2 * WINDOW)
    for y in (0, WINDOW):
        for left in (0, WINDOW):
            window = (..., slice(y, y + WINDOW), slice(left, left + WINDOW))
            expected = alone(model, x[window])
            if batch_size == 1:
                assert torch.equal(probs[window], expected)
            else:  # batched windows: the same model, another batch shape
                torch.testing.assert_close(probs[window], expected, rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_overlapping_windows_average(model):
    x = photo(WINDOW, WINDOW + 16, seed=2)  # two windows, at 0 and 16: columns 16..31 are in both
    probs = inference(batch_size=1, overlap=16).probabilities(model, x)
    left, right = alone(model, x[..., :WINDOW]), alone(model, x[..., 16:])
    torch.testing.assert_close(probs[..., :16], left[..., :16], rtol=0, atol=0)
    torch.testing.assert_close(probs[..., 16:WINDOW], (left[..., 16:] + right[..., :16]) / 2, rtol=0, atol=1e-7)
    torch.testing.assert_close(probs[..., WINDOW:], right[..., 16:], rtol=0, atol=0)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, *x.shape[-2:]), rtol=0, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("mode, size", [("slide", (45, 77)), ("resize", (WINDOW, WINDOW))])
def test_flip_tta_is_mirror_symmetric(model, mode, size):
    x = photo(*size, seed=3)
    tta = inference(mode, overlap=8, flip_tta=True)
    assert torch.equal(tta.probabilities(model, x.flip(-1)), tta.probabilities(model, x).flip(-1))
    plain = inference(mode, overlap=8).probabilities(model, x)
    assert not torch.equal(tta.probabilities(model, x), plain)  # it does run the mirrored photo


@torch.no_grad()
def test_a_photo_smaller_than_the_window_pads_or_is_refused(model):
    x = photo(20, 50, seed=4)
    probs = inference().probabilities(model, x)
    assert probs.shape[-2:] == (20, 50)
    with pytest.raises(UserError, match=r"^street\.png: 50x20 is smaller than the 32 px slide window and "
                                        r"inference\.pad is none; set inference\.pad: constant"):
        inference(pad="none").probabilities(model, x, source="street.png")


@torch.no_grad()
@pytest.mark.parametrize("mode, tta", [("slide", False), ("slide", True), ("resize", True)])
def test_inputs_per_photo_counts_the_inputs_the_model_sees(model, mode, tta):
    """evaluate scales costs measured on one input by this: it must be what running the photos takes."""
    run = inference(mode, overlap=8, flip_tta=tta)
    sizes = [(80, 48), (20, 40), (56, 80)] if mode == "slide" else [(WINDOW, WINDOW)] * 2  # 6, 2 (padded), 6
    seen = []
    hook = model.register_forward_hook(lambda module, args, output: seen.append(len(args[0]["photo"])))
    try:
        for i, size in enumerate(sizes):
            run.probabilities(model, photo(*size, seed=i))
    finally:
        hook.remove()
    assert run.inputs_per_photo(sizes) == sum(seen) / len(sizes) == \
        {("slide", False): 14 / 3, ("slide", True): 28 / 3, ("resize", True): 2}[mode, tta]


def test_window_starts_cover_the_side_with_the_last_flush():
    for length in (32, 33, 63, 64, 65, 100, 480):
        for overlap in (0, 8, 31):
            starts = window_starts(length, WINDOW, WINDOW - overlap)
            covered = set().union(*(range(s, s + WINDOW) for s in starts))
            assert covered == set(range(length)) and starts[0] == 0 and starts[-1] == length - WINDOW
            assert all(b - a <= WINDOW - overlap for a, b in zip(starts, starts[1:]))


def test_stored_probabilities_are_bounded_and_grow_back():
    assert stored_size((1024, 2048), 512) == (256, 512) and stored_size((360, 480), 512) == (360, 480)
    probs = torch.rand(1, 3, 8, 8).softmax(1)
    small = resample(probs, (4, 4))
    torch.testing.assert_close(small, torch.nn.functional.avg_pool2d(probs, 2))  # area average when shrinking
    assert resample(small, (8, 8)).shape == (1, 3, 8, 8) and resample(probs, (8, 8)) is probs


def test_overlap_must_be_smaller_than_the_window():
    with pytest.raises(UserError, match=r"inference\.overlap: 32 px is not smaller than the window \(data\.crop_size "
                                        r"32\); use 0 to 31"):
        load_config(REPO / "params.yaml", overrides={"inference": {"overlap": 32},
                                                    "data": {"crop_size": 32, "load_size": 36}})


def model_classes(model):
    return alone(model, photo(WINDOW, WINDOW)).shape[1]
