"""Real data as users have it: a dataset whose photos differ in size goes through `data check`, `prepare`, a short
`seg-p2p exp run` in slide mode and `seg-p2p segment`, with no conversion by the user, and every label map comes out
at its photo's size. Built from the synthetic generator (always) and from ../shared camvid crops (where present)."""

import json
import shutil

import numpy as np
import pytest
import yaml
from conftest import BIN, REPO, run_in, shared_dataset, study_repo, tiny_config, tiny_settings
from PIL import Image

from seg_p2p.cli import main
from seg_p2p.data.prepare import PreparedData
from seg_p2p.data.spec import load_spec
from seg_p2p.data.synthetic import draw_scene
from seg_p2p.ragged import RaggedArray
from seg_p2p.stored import rerun

SIZES = [(80, 80), (56, 80), (80, 48), (44, 72), (28, 60)]  # (height, width); 28 < the 32 px window: padded
SPEC = load_spec("synthetic")


def write_varied(root, counts=(("train", 10), ("test", 3))):
    """A paired-layout dataset (A photos, B colour labels) of synthetic scenes cropped to SIZES, with dataset.yaml."""
    rng = np.random.default_rng(0)
    for split, count in counts:
        for i in range(count):
            photo, mask = draw_scene(rng, 80)
            h, w = SIZES[(i + (split == "test")) % len(SIZES)]
            for side, image in (("A", photo[:h, :w]), ("B", SPEC.palette[mask[:h, :w]])):
                (root / side / split).mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(root / side / split / f"{split}{i}.png")
    shutil.copy(REPO / "seg_p2p" / "data" / "specs" / "synthetic.yaml", root / "dataset.yaml")
    return root


def test_data_check_reports_the_range_of_sizes_and_prepare_keeps_them(tmp_path, capsys):
    root = write_varied(tmp_path / "raw")
    main(["data", "check", str(root)])
    out = capsys.readouterr().out
    assert "test          3  72x44 .. 80x56 (3 sizes)" in out  # smallest and largest by area
    train_line = next(line for line in out.splitlines() if line.startswith("train"))
    assert "60x28 .. 80x80 (5 sizes)" in train_line
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"dataset": str(root / "dataset.yaml"), "root": str(root)}}))
    main(["--params", str(params), "prepare", "--out", str(tmp_path / "prepared")])
    data = PreparedData(tmp_path / "prepared")
    assert data.sizes("test") == [SIZES[1], SIZES[2], SIZES[3]]
    for i, name in enumerate(data.names("test")):
        assert (data.photos("test")[i] == np.asarray(Image.open(root / "A" / "test" / f"{name}.png"))).all()


# One seed, one epoch, slide mode with overlapping windows, one strategy of each kind that segment handles.
SLIDE = {"name": "any-size", "inference": {"mode": "slide", "overlap": 8},
         "train": {"n_epochs": 1, "n_epochs_decay": 0, "sample_every": 1},
         "strategies": ["max", "learned", "joint"]}


@pytest.fixture(scope="module")
def slide_study(tmp_path_factory):
    """A repo copy whose experiment file points at a dataset of varied sizes, after `seg-p2p exp run FILE`."""
    tmp = tmp_path_factory.mktemp("any-size")
    raw = write_varied(tmp / "raw")
    root = study_repo(tmp / "repo", {}, ("learned", "joint"))
    experiment = root / "experiments" / "any-size.yaml"
    experiment.write_text(yaml.safe_dump({**SLIDE, "data": {"dataset": str(raw / "dataset.yaml"), "root": str(raw)}}))
    run_in(["git", "add", "-A"], root)
    run_in(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "experiment"], root)
    run_in([str(BIN / "seg-p2p"), "exp", "run", str(experiment)], root, timeout=1200)
    return root, raw


@pytest.mark.slow
def test_exp_run_scores_every_model_at_each_photos_native_size(slide_study):
    root, raw = slide_study
    sizes = PreparedData(root / "data" / "prepared").sizes("test")
    assert sizes == [SIZES[1], SIZES[2], SIZES[3]]
    for model in ("members/pix2pix", "members/unet_ce", "ensembles/max", "ensembles/learned", "ensembles/joint"):
        predict = root / "runs" / "seed0" / model / "predict"
        assert RaggedArray(predict / "test_pred", rerun("predict")).shapes == sizes
        if model.startswith("members/"):  # the ensembles' inputs; a strategy's own probabilities are read by nothing
            probs = RaggedArray(predict / "test_probs", rerun("predict"))
            assert [a.shape[1:] for a in probs] == sizes  # under max_stored_side: whole
        else:
            assert not (predict / "test_probs.npy").exists()
    metrics = json.loads((root / "runs" / "seed0" / "metrics.json").read_text())
    assert set(metrics) == {*tiny_settings()["members"], "reference", "max", "learned", "joint"}
    for model in metrics:  # costs per photo: each test photo here takes 6 windows (32 px, 8 px overlap)
        assert json.loads((root / "runs" / "seed0" / "evaluate" / f"{model}.json").read_text())[
            "model_inputs_per_image"] == 6
    assert "slide" in (root / "reports" / "any-size" / "conclusion.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("model", ["members/unet_l1", "ensembles/learned", "ensembles/joint"])
def test_segment_writes_labels_at_each_photos_size(slide_study, model, tmp_path):
    root, raw = slide_study
    out = tmp_path / "labels"
    photos = [raw / "A" / "test" / "test0.png", raw / "A" / "train"]  # a file and a folder
    result = run_in([str(BIN / "seg-p2p"), "segment", "--model", f"runs/seed0/{model}", "--out", str(out),
                     "--tta", *map(str, photos)], root)
    assert "seg-p2p segment: 11 photo(s) labelled by" in result.stderr
    for photo in [photos[0], *sorted(photos[1].iterdir())]:
        size = Image.open(photo).size
        labels = Image.open(out / f"{photo.stem}.png")
        assert labels.mode == "L" and labels.size == size and np.asarray(labels).max() < SPEC.num_classes
        colour = np.asarray(Image.open(out / f"{photo.stem}_colour.png"))
        assert (colour == SPEC.palette[np.asarray(labels)]).all()
        assert Image.open(out / f"{photo.stem}_overlay.png").size == size


def write_camvid_crops(root, count=(("train", 8), ("val", 2), ("test", 3))):
    """An index-layout dataset of random crops of varied sizes from the shared camvid (480x360) images."""
    camvid = shared_dataset("camvid")
    rng = np.random.default_rng(0)
    for split, n in count:
        files = sorted((camvid / split).glob("*.png"))[:n]
        for path in files:
            photo = np.asarray(Image.open(path))
            mask = np.asarray(Image.open(camvid / f"{split}annot" / path.name))
            h, w = int(rng.integers(40, 200)), int(rng.integers(40, 300))
            y, x = int(rng.integers(0, 360 - h)), int(rng.integers(0, 480 - w))
            for folder, image in ((split, photo[y:y + h, x:x + w]), (f"{split}annot", mask[y:y + h, x:x + w])):
                (root / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(root / folder / path.name)
    return root


def test_camvid_crops_of_varied_sizes_train_and_segment(tmp_path):
    root = write_camvid_crops(tmp_path / "raw")
    cfg = tiny_config(data={"dataset": "camvid", "root": str(root)}, inference={"mode": "slide", "overlap": 8},
                      train={"n_epochs": 1, "n_epochs_decay": 0, "sample_every": 1})
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    main(["--params", str(params), "prepare", "--out", str(tmp_path / "data")])
    data = PreparedData(tmp_path / "data")
    assert len(set(data.sizes("train"))) > 1
    member = tmp_path / "runs" / "seed0" / "members" / "unet_ce"
    main(["--params", str(params), "train", "--member", "unet_ce", "--data", str(tmp_path / "data"),
          "--out", str(member / "train")])
    main(["--params", str(params), "predict", "--member", "unet_ce", "--data", str(tmp_path / "data"),
          "--checkpoint", str(member / "train" / "checkpoints" / "best.pt"), "--out", str(member / "predict"),
          "--split", "test"])
    assert RaggedArray(member / "predict" / "test_pred", rerun("predict")).shapes == data.sizes("test")
    main(["--params", str(params), "segment", "--model", str(member), "--out", str(tmp_path / "labels"),
          "--data", str(tmp_path / "data"), str(root / "test")])
    for photo in sorted((root / "test").iterdir()):
        assert Image.open(tmp_path / "labels" / photo.name).size == Image.open(photo).size
