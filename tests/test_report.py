"""The report on a fake study: files, numbers worked out by hand, and verdicts that follow the numbers."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from seg_p2p.config import Config
from seg_p2p.errors import UserError
from seg_p2p.run_paths import REFERENCE, model_dir
from seg_p2p.metrics import class_tallies, scores_from_confusion
from seg_p2p.ragged import open_ragged
from seg_p2p.report import load_study, subject, write_report
from seg_p2p.report.ensembling import ensembling_sentence
from seg_p2p.report.headline import short
from seg_p2p.report.verdict import adds_sentence, effect, pays_sentence, trainable_sentence

CLASSES = ["sky", "road", "car"]
MEMBERS = ["pix2pix", "unet_l1", "unet_ce"]
ALL_MEMBERS = MEMBERS + ["unet_ce_adv"]  # the members' 2 x 2
# The budget-matched network (params.yaml's `reference:`), trained like a member and combined by no strategy.
REFERENCES = [REFERENCE]
SUPERVISION = {"pix2pix": "colour + L1", "unet_l1": "colour + L1", "unet_ce": "cross-entropy",
               "unet_ce_adv": "cross-entropy", "deeplab": "cross-entropy",
               REFERENCE: "cross-entropy"}
# a user's fifth cross-entropy member and the reference (their kind's settings: any plain one will do)
KINDS = {"deeplab": "unet_ce", REFERENCE: "unet_ce"}
# What evaluate writes as the reference's `budget` (its ensemble: the study's members).
BUDGET = {"width": 1.7, "inference_params": 18_130_000, "ensemble_inference_params": 18_200_000,
          "train_flops": 1_020_000_000_000_000, "ensemble_train_flops": 1_000_000_000_000_000, "epochs": 6,
          "ensemble_epochs": 6}
IN_SAMPLE = ("learned",)  # strategies fitted on val (stacking): `val_in_sample: true`
GAN_PAIRS = {"pix2pix": "unet_l1", "unet_ce_adv": "unet_ce"}  # params.yaml's
STRATEGIES = ["mean", "learned", "control", "joint", "joint-no-d"]
OFFSETS = [0, 1, 0, 1, 0, 1]  # per-image variation of the error count, so the bootstrap has something to resample
# Per model and seed, the base number of pixels (of 10 per class and image) labelled as the next class.
ERRORS = {"pix2pix": (2, 4, 3), "unet_l1": (3, 3, 3), "unet_ce": (1, 1, 1), "unet_ce_adv": (2, 2, 2), "deeplab": (0, 0, 0),
          REFERENCE: (2, 1, 2),
          "mean": (1, 2, 1), "max": (2, 2, 2), "zz": (3, 3, 3), "joint@pix2pix": (1, 1, 1), "control@pix2pix": (2, 2, 2),
          "learned": (3, 3, 3), "control": (3, 3, 3), "joint": (1, 1, 1), "joint-no-d": (3, 3, 3),
          "joint-onehot": (1, 1, 1), "control-without-pix2pix": (2, 2, 2), "joint-without-pix2pix": (1, 2, 1)}
# Models that train with their own history.csv: the evaluate record says `curves: true` for them.
HISTORY = {"pix2pix": ["loss_g_gan", "loss_g_l1", "loss_d"], "unet_l1": ["loss_g_l1"], "unet_ce": ["loss_ce"],
           "unet_ce_adv": ["loss_g_gan", "loss_ce", "loss_d"], "zz": ["loss_ce"], REFERENCE: ["loss_ce"],
           "control": ["loss_g_gan", "loss_ce", "loss_d"], "joint": ["loss_g_gan", "loss_ce", "loss_d"],
           "joint-no-d": ["loss_ce"], "joint-onehot": ["loss_g_gan", "loss_ce", "loss_d"]}
GAN = ("pix2pix", "unet_ce_adv", "control", "joint", "joint-onehot")  # models with a discriminator
INSIDE_ERRORS = (1, 1, 1)  # a member scored alone from a joint run's weights, unless ERRORS names "strategy@member"


def joint_role(beta, discriminator=True, init="members"):
    label = f"{'control' if beta == 0 else 'end-to-end'}, β = {beta:g}"
    return {"label": label, "role": "control" if beta == 0 else "end_to_end", "discriminator": discriminator,
            "beta": beta, "init": init, "balance": "normalise"}


# What evaluate writes as `hypothesis`; null for members and fixed combiners. Keyed by name only in this fake.
HYPOTHESIS = {"learned": {"label": "frozen stacking", "role": "stacking", "discriminator": None, "beta": None,
                          "init": None, "balance": None},
              "control": joint_role(0), "joint": joint_role(0.5), "joint-onehot": joint_role(0.5), "zz": joint_role(0.5),
              "joint-no-d": joint_role(0.5, discriminator=False), "control-without-pix2pix": joint_role(0),
              "joint-without-pix2pix": joint_role(0.5)}


def _confusions(base: int) -> np.ndarray:
    """Per-image (6,3,3) confusions: 10 pixels per class, base + offset of them mistaken for the next class.

    Every class loses and gains the same count E summed over images, so each IoU is (60 - E) / (60 + E).
    """
    conf = np.zeros((len(OFFSETS), 3, 3), dtype=np.int64)
    for i, offset in enumerate(OFFSETS):
        for c in range(3):
            conf[i, c, c] = 10 - base - offset
            conf[i, c, (c + 1) % 3] = base + offset
    return conf


def _iou(base: int) -> float:
    errors = base * len(OFFSETS) + sum(OFFSETS)
    return (60 - errors) / (60 + errors)


def save_ragged(path, items):
    with open_ragged(path, items.dtype, [item.shape for item in items]) as array:
        for i, item in enumerate(items):
            array[i] = item


def write_history(train_dir, model, members):
    """The history.csv of a model that trains with its own: 3 epochs, val mIoU on some, the joint runs' signals."""
    epochs = np.arange(1, 4)
    history = pd.DataFrame({"epoch": epochs, **{c: 1.0 / epochs for c in HISTORY[model]},
                            "val_miou": [0.2, np.nan, 0.4]})
    if model in ("joint", "joint-onehot"):  # fusion share of the members' gradient: 0.2, 1/3, 3/7
        for i, member in enumerate(members):  # measured on some steps: none in the last epoch
            history[f"grad_fusion.{member}"] = [1.0, 0.5 * (i + 1), np.nan]
            history[f"grad_own.{member}"] = [1.0, 2.0, np.nan]
    if model in ("control", "joint", "joint-no-d", "joint-onehot"):  # diversity rises on train only
        history["train_diversity"] = [0.1, 0.2, 0.3]
        history["val_diversity"] = [0.1, 0.1, 0.1]
    train_dir.mkdir(parents=True)
    history.to_csv(train_dir / "history.csv", index=False)


def write_prepared(data, rng):
    """What `prepare` leaves that the report reads: the spec and 6 test photos and masks (16 x 16 px)."""
    data.mkdir(parents=True)
    colours = [[70, 130, 180], [128, 64, 128], [0, 0, 142]]
    spec = {"name": "fakescapes", "classes": [{"name": n, "colour": c} for n, c in zip(CLASSES, colours)],
            "void_value": 255}
    (data / "spec.json").write_text(json.dumps(spec))
    masks = rng.integers(0, 3, (6, 16, 16), dtype=np.uint8)
    masks[:, :2] = 255
    save_ragged(data / "test_photos", rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8))
    save_ragged(data / "test_masks", masks)
    (data / "test_names.json").write_text(json.dumps([f"t{i}" for i in range(6)]))


def make_study(root, errors=None, diverged=(False, False, False), seeds=(0, 1, 2), strategies=STRATEGIES,
               members=MEMBERS, inside=False, without=None, references=REFERENCES, val_errors=None, no_val=()):
    """A prepared-data folder and a runs folder laid out as the pipeline writes them. `inside`: the joint runs
    record each member scored alone; `without`: strategy -> the members it runs (a leave-one-out run);
    `references`: [REFERENCE] (declared by `reference:`) or none;
    `val_errors`: model -> its val error bases where they differ from the test's; `no_val`: models that wrote no val
    predictions (val_miou null)."""
    errors = {**ERRORS, **(errors or {})}
    val_errors = {**errors, **(val_errors or {})}
    trained_alone = list(members) + list(references)
    rng = np.random.default_rng(0)
    data, runs = root / "data", root / "runs"
    write_prepared(data, rng)
    for index, seed in enumerate(seeds):
        evaluate = runs / f"seed{seed}" / "evaluate"
        evaluate.mkdir(parents=True)
        for model in trained_alone + list(strategies):
            conf = _confusions(errors[model][index])
            np.save(evaluate / f"{model}_test_tallies.npy", class_tallies(conf))
            gan = model in GAN
            kind = "reference" if model == REFERENCE else ("member" if model in members else "ensemble")
            record = {"model": model, "kind": kind, "seed": seed,
                      **scores_from_confusion(conf.sum(0), CLASSES),
                      "params": {"generator": 54_413_955, "discriminator": 2_768_705 if gan else 0, "fusion": 0,
                                 "training": 57_182_660 if gan else 54_413_955, "inference": 54_413_955},
                      "flops_per_image": 3_000_000_000, "inference_ms_per_image": 5.0,
                      "train_seconds": 100.0 + seed, "seconds_per_step": 0.5,
                      "diverged": diverged[index] if model == "joint" else (False if gan else None),
                      "curves": model in HISTORY, "hypothesis": HYPOTHESIS.get(model),
                      "val_miou": None if model in no_val else _iou(val_errors[model][index]),
                      "val_in_sample": model in IN_SAMPLE}
            if model in trained_alone:
                record |= {"supervision": SUPERVISION[model],
                           "budget": {**BUDGET, "ensemble": list(members)} if model in references else None}
            else:
                record["members"] = (without or {}).get(model, list(members))
                if inside and (HYPOTHESIS.get(model) or {}).get("role") in ("control", "end_to_end"):
                    record["members_inside"] = {}
                    for member in record["members"]:
                        alone = _confusions(errors.get(f"{model}@{member}", INSIDE_ERRORS)[index])
                        np.save(evaluate / f"{model}@{member}_test_tallies.npy", class_tallies(alone))
                        record["members_inside"][member] = scores_from_confusion(alone.sum(0), CLASSES)
            (evaluate / f"{model}.json").write_text(json.dumps(record))
            folder = model_dir(runs / f"seed{seed}", model, trained_alone)
            predict = folder / "predict"
            predict.mkdir(parents=True)
            save_ragged(predict / "test_pred", rng.integers(0, 3, (6, 8, 8), dtype=np.uint8))
            if model in HISTORY:
                write_history(folder / "train", model, members)
    declared = {member: {"kind": KINDS.get(member, member)} for member in trained_alone}
    cfg = Config.model_validate({"name": "fake-study", "seeds": list(seeds), "strategies": list(strategies),
                                 "reference": declared.pop(REFERENCE, None), "members": declared,
                                 "gan_pairs": {g: p for g, p in GAN_PAIRS.items() if g in members and p in members}})
    return cfg, data, runs


def test_report_writes_every_file_with_hand_computed_numbers(tmp_path):
    cfg, data, runs = make_study(tmp_path)
    path = write_report(cfg, data, runs, tmp_path / "report")
    assert path == tmp_path / "report" / "conclusion.md"
    for name in ("members", "ensembles", "hypothesis", "training_signals", "per_class_iou"):
        assert (tmp_path / "report" / f"{name}.csv").is_file() and (tmp_path / "report" / f"{name}.tex").is_file()
    for name in ("qualitative", "per_class_iou", "training_curves", "beta"):
        assert (tmp_path / "report" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"

    # pix2pix: 15 errors of 60 pixels per class in seed 0 -> IoU 45/75; 27 in seed 1 -> 33/87; 21 in seed 2 -> 39/81.
    miou = [45 / 75, 33 / 87, 39 / 81]
    members = pd.read_csv(tmp_path / "report" / "members.csv").set_index("model")
    assert members.loc["pix2pix", "miou_mean"] == pytest.approx(np.mean(miou))
    assert members.loc["pix2pix", "miou_std"] == pytest.approx(np.std(miou, ddof=1))
    assert members.loc["pix2pix", "params_training"] == 57_182_660  # exact integers in the CSV
    text = path.read_text()
    assert f"{np.mean(miou):.3f} ± {np.std(miou, ddof=1):.3f}" in text and "57.18" in text
    assert "# fake-study: pix2pix as a semantic segmenter on fakescapes" in text and "Seeds: 0, 1, 2" in text
    assert "](qualitative.png)" in text and "](training_curves.png)" in text and "](beta.png)" in text
    assert r"$\pm$" in (tmp_path / "report" / "members.tex").read_text()

    ensembles = pd.read_csv(tmp_path / "report" / "ensembles.csv").set_index("strategy")
    assert (ensembles["best_member"] == "unet_ce").all()  # best by mean mIoU
    learned = ensembles.loc["learned"]
    assert learned["delta_vs_best"] == pytest.approx(_iou(3) - _iou(1))
    assert learned["delta_low"] <= learned["delta_vs_best"] <= learned["delta_high"] < 0
    per_class = pd.read_csv(tmp_path / "report" / "per_class_iou.csv").set_index("model")
    assert per_class.loc["pix2pix", "road"] == pytest.approx(np.mean(miou))

    hypothesis = pd.read_csv(tmp_path / "report" / "hypothesis.csv").set_index("strategy")
    assert hypothesis.index.tolist() == ["learned", "control", "joint", "joint-no-d"]
    assert hypothesis["role"].tolist() == ["stacking", "control", "end_to_end", "end_to_end"]
    # every end-to-end row against the control with its init (no control without D here: the one with D)
    assert hypothesis["control"].fillna("").tolist() == ["", "", "control", "control"]
    assert hypothesis.loc["joint", "delta_vs_control"] == pytest.approx(_iou(1) - _iou(3))
    assert hypothesis.loc["joint", "delta_vs_control_low"] > 0
    assert hypothesis.loc["control", "delta_vs_stacking"] == pytest.approx(0.0)
    signals = pd.read_csv(tmp_path / "report" / "training_signals.csv").set_index("strategy")
    assert signals.loc["joint", ["fusion_share.pix2pix", "fusion_share.unet_l1", "fusion_share.unet_ce"]].tolist() \
        == pytest.approx([0.5 / 2.5, 1.0 / 3.0, 1.5 / 3.5])  # the last epoch that measured them (epoch 2)
    assert signals.loc["joint", ["diversity_train_first", "diversity_train_last", "diversity_val_last"]].tolist() \
        == pytest.approx([0.1, 0.3, 0.1])
    beta = pd.read_csv(tmp_path / "report" / "beta.csv")
    assert beta[["strategy", "beta", "discriminator"]].values.tolist() == [
        ["control", 0.0, True], ["joint", 0.5, True], ["joint-no-d", 0.5, False]]
    assert beta.loc[1, "miou_mean"] == pytest.approx(_iou(1)) and beta.loc[1, "miou_low"] == pytest.approx(_iou(1))

    assert ("(a) Is it trainable? Yes: pix2pix was trained end-to-end with the other networks, its discriminator "
            "in the loop, in 3 runs (`joint`, every seed); 0 diverged, and no discriminator collapsed.") in text
    assert ("(b) Does end-to-end training pay against the control? Yes: `joint` (β = 0.5, with D, fine-tuned) vs "
            "`control` (β = 0: the same loop") in text
    assert "over 3 seeds, so end-to-end training helps." in text
    assert ("`joint-no-d` (β = 0.5, no D, fine-tuned) vs `control`: -0.000 mIoU" in text
            or "`joint-no-d` (β = 0.5, no D, fine-tuned) vs `control`: +0.000 mIoU" in text)
    assert "More training alone (`control` vs `learned`, frozen stacking): +0.000 mIoU" in text
    assert ("(c) What does the discriminator do? It helps: `joint` (β = 0.5, with D, fine-tuned) vs "
            "`joint-no-d`") in text
    assert "The fusion loss supplies 0.20 of the gradient norm reaching pix2pix's output in `joint`" in text
    assert "`joint`: 0.100 → 0.300 on training images, 0.100 → 0.100 on val" in text
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["test_miou.pix2pix"] == pytest.approx(np.mean(miou))
    assert summary["delta_vs_control.joint"] == pytest.approx(_iou(1) - _iou(3))


def test_the_beta_figure_draws_a_line_per_member_set_and_the_paired_deltas(tmp_path, monkeypatch):
    """control and control-without-pix2pix both sit at beta = 0: each starts its own member set's line, and the
    right panel shows each run's paired Δ against its own control, as table 3 gives it."""
    from seg_p2p.report import figures

    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.setdefault(path.name, fig))
    without = ["control-without-pix2pix", "joint-without-pix2pix"]
    cfg, data, runs = make_study(tmp_path, strategies=["learned", "control", "joint", *without],
                                 without={s: ["unet_l1", "unet_ce"] for s in without})
    write_report(cfg, data, runs, tmp_path / "report")
    left, right = drawn["beta.png"].axes
    lines = {c.get_label(): list(c.lines[0].get_xdata()) for c in left.containers}
    assert set(lines) == {"all members, with D, normalise", "without pix2pix, with D, normalise"}
    assert all(len(x) == 2 and x[0] < 0.01 and 0.49 < x[1] < 0.51 for x in lines.values())  # beta 0 and 0.5, nudged
    beta = pd.read_csv(tmp_path / "report" / "beta.csv").set_index("strategy")
    assert beta.groupby("line")["members"].nunique().max() == 1
    assert beta.loc["joint-without-pix2pix", "control"] == "control-without-pix2pix"
    hypothesis = pd.read_csv(tmp_path / "report" / "hypothesis.csv").set_index("strategy")
    for strategy in ("joint", "joint-without-pix2pix"):
        assert beta.loc[strategy, "delta_vs_control"] == pytest.approx(hypothesis.loc[strategy, "delta_vs_control"])
        assert beta.loc[strategy, "delta_vs_control_low"] < beta.loc[strategy, "delta_vs_control"] \
            < beta.loc[strategy, "delta_vs_control_high"]
    assert beta.loc["control", "delta_vs_control"] == 0.0
    deltas = {c.get_label(): list(c.lines[0].get_ydata()) for c in right.containers}
    assert deltas["all members, with D, normalise"] == pytest.approx([0.0, beta.loc["joint", "delta_vs_control"]])


@pytest.mark.parametrize("joint, diverged, expected", [
    ((1, 1, 1), (False,) * 3, "pay against the control? Yes: "),
    ((5, 5, 5), (False,) * 3, "excludes 0) over 3 seeds, so end-to-end training hurts."),
    ((3, 3, 3), (False,) * 3, "includes 0) over 3 seeds, so end-to-end training is not conclusive (the interval"),
    ((1, 1, 1), (True, False, False), "(a) Is it trainable? Only unreliably: pix2pix was trained end-to-end"),
    ((1, 1, 1), (True,) * 3, "(a) Is it trainable? No: pix2pix was trained"),
])
def test_verdict_follows_the_numbers(tmp_path, joint, diverged, expected):
    cfg, data, runs = make_study(tmp_path, errors={"joint": joint}, diverged=diverged)
    text = write_report(cfg, data, runs, tmp_path / "report").read_text()
    assert expected in text
    assert f"in 3 runs (`joint`, every seed); {sum(diverged)} diverged" in text


def test_fewer_than_three_seeds_is_never_conclusive(tmp_path):
    cfg, data, runs = make_study(tmp_path, seeds=(0, 1))
    text = write_report(cfg, data, runs, tmp_path / "report").read_text()
    assert "Not conclusive: `joint` (β = 0.5, with D, fine-tuned) vs `control`" in text
    assert "so end-to-end training is not conclusive (2 seeds; a verdict needs at least 3)." in text
    assert "With 2 seeds this study calls no difference" in text


def test_single_seed_without_joint_shows_plain_means_and_says_what_is_untested(tmp_path):
    cfg, data, runs = make_study(tmp_path, seeds=(0,), strategies=["max", "learned"])
    text = write_report(cfg, data, runs, tmp_path / "report").read_text()
    assert "±" not in text.split("## How to read")[0] and f"{45 / 75:.3f}" in text
    assert "(a) Is it trainable? Not tested: this study has no end-to-end run with the discriminator" in text
    assert "(b) Does end-to-end training pay? Not tested" in text
    assert "(c) What does the discriminator do? Not tested" in text
    assert not (tmp_path / "report" / "beta.png").exists()


@pytest.mark.parametrize("missing, fix", [
    ("runs/seed1/evaluate/joint_test_tallies.npy", "run `dvc repro -f -s evaluate` to write it again"),
    ("runs/seed0/evaluate/unet_l1.json", "run `dvc repro -f -s evaluate`"),
    ("runs/seed0/ensembles/learned/predict/test_pred.npy", "run `dvc repro -f -s ensemble`"),
    ("runs/seed1/members/unet_ce/train/history.csv", "delete the training's train/ folder and run `dvc repro train`"),
    ("data/test_masks.npy", "run `dvc repro -f -s prepare`"),
])
def test_a_missing_input_names_the_file_and_the_stage(tmp_path, missing, fix):
    cfg, data, runs = make_study(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(UserError, match=re.escape(f"{missing}: missing; {fix}")):
        write_report(cfg, data, runs, tmp_path / "report")
    assert not (tmp_path / "report").exists()  # every input is checked before the first output


def test_a_strategy_is_placed_by_its_record_not_its_file_name(tmp_path):
    cfg, data, runs = make_study(tmp_path, strategies=["mean", "learned", "control", "joint-onehot"])
    study = load_study(cfg, data, runs)
    assert study.trained == MEMBERS + REFERENCES + ["control", "joint-onehot"]  # their histories: training curves
    text = write_report(cfg, data, runs, tmp_path / "report").read_text()
    hypothesis = pd.read_csv(tmp_path / "report" / "hypothesis.csv")
    assert hypothesis["strategy"].tolist() == ["learned", "control", "joint-onehot"]
    assert hypothesis["control"].fillna("").tolist() == ["", "", "control"]
    assert "Yes: `joint-onehot` (β = 0.5, with D, fine-tuned) vs `control`" in text
    assert "(c) What does the discriminator do? Not tested" in text
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["delta_vs_control.joint-onehot"] == pytest.approx(_iou(1) - _iou(3))


def test_curves_follow_the_record(tmp_path):
    cfg, data, runs = make_study(tmp_path, strategies=["learned", "joint-onehot"])
    (runs / "seed1" / "ensembles" / "joint-onehot" / "train" / "history.csv").unlink()
    with pytest.raises(UserError, match=r"joint-onehot/train/history.csv: missing; delete the training's train/ "
                       r"folder and run `dvc repro ensemble`"):
        load_study(cfg, data, runs)


@pytest.mark.parametrize("key", ["curves", "hypothesis"])
def test_a_record_without_the_role_fields_says_to_rerun_evaluate(tmp_path, key):
    cfg, data, runs = make_study(tmp_path)
    path = runs / "seed0" / "evaluate" / "joint.json"
    record = json.loads(path.read_text())
    del record[key]
    path.write_text(json.dumps(record))
    with pytest.raises(UserError, match=rf"joint.json: missing {key}; run `dvc repro -f -s evaluate`"):
        load_study(cfg, data, runs)


def _rows(low: float, high: float, seeds: int = 3) -> list[dict]:
    """Hand-made table-3 rows: frozen stacking, the control and one end-to-end run with its delta."""
    delta = {"delta": (low + high) / 2, "low": low, "high": high, "seeds": seeds, "se": (high - low) / 3.92}
    common = {"diverged": 0, "unrecorded": 0, "runs": seeds, "collapsed": 0, "signals": None, "stacking": "stack",
              "members": ["a", "b"]}
    return [{**common, "strategy": "stack", "role": "stacking", "beta": None, "discriminator": None, "init": None,
             "control": None, "delta_control": None, "delta_stacking": None},
            {**common, "strategy": "ctl", "role": "control", "beta": 0.0, "discriminator": True, "init": "members",
             "control": None, "delta_control": None,
             "delta_stacking": {**delta, "delta": 0.0, "low": -1, "high": 1, "se": 2 / 3.92}},
            {**common, "strategy": "e2e", "role": "end_to_end", "beta": 0.5, "discriminator": True, "init": "members",
             "control": "ctl", "delta_control": delta, "delta_stacking": delta}]


@pytest.mark.parametrize("low, high, seeds, expected", [
    (0.01, 0.05, 3, "Yes: `e2e` (β = 0.5, with D, fine-tuned) vs `ctl` (β = 0: the same loop, epochs and batches, "
                    "no gradient from the fusion loss into the members) is +0.030 mIoU (95% interval [+0.010, "
                    "+0.050] excludes 0) over 3 seeds, so end-to-end training helps."),
    (-0.05, -0.01, 3, "No, it hurts: `e2e` (β = 0.5, with D, fine-tuned) vs `ctl`"),
    (-0.02, 0.04, 3, "includes 0) over 3 seeds, so end-to-end training is not conclusive (the interval includes 0; "
                     "this study resolves |Δ| ≥ 0.043, about 56 seeds would resolve its +0.010)."),
    (0.01, 0.05, 2, "Not conclusive: `e2e` (β = 0.5, with D, fine-tuned) vs `ctl`"),
])
def test_verdict_on_hand_made_numbers(low, high, seeds, expected):
    sentence = pays_sentence(_rows(low, high, seeds))
    assert sentence.startswith("(b) Does end-to-end training pay against the control? ")
    assert expected in sentence
    if seeds < 3:
        assert "so end-to-end training is not conclusive (2 seeds; a verdict needs at least 3)." in sentence
    assert sentence.endswith("More training alone (`ctl` vs `stack`, frozen stacking): +0.000 mIoU (95% interval "
                             "[-1.000, +1.000] includes 0), so it is not conclusive (the interval includes 0; this "
                             "study resolves |Δ| ≥ 1.429, no number of seeds resolves a Δ of 0)."
                             if seeds >= 3 else "a verdict needs at least 3).")
    assert effect(_rows(low, high, seeds)[2]["delta_control"]) in sentence
    assert trainable_sentence(_rows(low, high)[:2], "gan").startswith("(a) Is it trainable? Not tested")


def test_not_conclusive_says_the_smallest_resolvable_delta_and_the_seeds_it_would_take():
    """By hand: SE 0.005 gives 2.8 × 0.005 = 0.014 at 80% power and a two-sided 5% level; resolving an observed
    +0.010 over 3 seeds takes 3 × (0.014 / 0.010)² = 5.88, so 6 seeds."""
    from seg_p2p.report.numbers import resolution

    delta = {"delta": 0.010, "low": -0.002, "high": 0.022, "seeds": 3, "se": 0.005}
    assert resolution(delta) == (pytest.approx(0.014), 6)
    assert effect(delta) == ("is not conclusive (the interval includes 0; this study resolves |Δ| ≥ 0.014, about 6 "
                             "seeds would resolve its +0.010)")
    assert resolution({**delta, "delta": 0.0}) == (pytest.approx(0.014), None)


@pytest.mark.parametrize("without_d, expected", [
    ((3, 3, 3), "It helps: `joint` (β = 0.5, with D, fine-tuned) vs `joint-no-d` is"),
    ((0, 0, 0), "It hurts: `joint` (β = 0.5, with D, fine-tuned) vs `joint-no-d` is"),
    ((1, 1, 1), "Not conclusive: `joint` (β = 0.5, with D, fine-tuned) vs `joint-no-d` is +0.000"),
])
def test_discriminator_sentence_follows_the_numbers(tmp_path, without_d, expected):
    cfg, data, runs = make_study(tmp_path, errors={"joint-no-d": without_d})
    text = write_report(cfg, data, runs, tmp_path / "report").read_text()
    assert "(c) What does the discriminator do? " + expected in text


def test_subject_is_the_members_with_a_discriminator(tmp_path):
    cfg, data, runs = make_study(tmp_path)
    assert subject(load_study(cfg, data, runs)) == "pix2pix"


def _mean_delta(a: tuple, b: tuple) -> float:
    """The paired delta of two models with these per-seed error bases, as the report computes it."""
    return float(np.mean([_iou(x) - _iou(y) for x, y in zip(a, b)]))


def test_the_members_2x2_says_what_the_gan_term_does_on_each_path(tmp_path):
    cfg, data, runs = make_study(tmp_path, members=ALL_MEMBERS)
    text = write_report(cfg, data, runs, tmp_path / "report").read_text()
    gan = pd.read_csv(tmp_path / "report" / "gan_2x2.csv").set_index("supervision")
    assert gan.loc["colour + L1", ["member_without_gan", "member_with_gan"]].tolist() == ["unet_l1", "pix2pix"]
    assert gan.loc["cross-entropy", ["member_without_gan", "member_with_gan"]].tolist() == ["unet_ce", "unet_ce_adv"]
    assert gan.loc["colour + L1", "delta_gan"] == pytest.approx(_mean_delta(ERRORS["pix2pix"], ERRORS["unet_l1"]))
    assert gan.loc["cross-entropy", "delta_gan"] == pytest.approx(_iou(2) - _iou(1))
    assert "### 1b. The GAN term on each supervision path" in text
    assert "on the cross-entropy path, `unet_ce_adv` vs `unet_ce` is -" in text
    assert "so the GAN term hurts." in text  # the cross-entropy pair: 2 errors against 1 on every seed
    assert subject(load_study(cfg, data, runs)) == "pix2pix and unet_ce_adv"
    assert "pix2pix and unet_ce_adv were trained end-to-end with the other networks, their discriminators" in text


def test_the_2x2_pairs_members_as_declared_not_by_supervision_and_order(tmp_path):
    """A fifth cross-entropy member listed before unet_ce: unet_ce_adv is still compared with unet_ce, the member it
    adds the GAN term to, and the newcomer stands alone, never a side of the GAN comparison."""
    members = ["pix2pix", "unet_l1", "deeplab", "unet_ce", "unet_ce_adv"]
    cfg, data, runs = make_study(tmp_path, members=members)
    text = write_report(cfg, data, runs, tmp_path / "report").read_text()
    gan = pd.read_csv(tmp_path / "report" / "gan_2x2.csv")
    rows = {(row.member_without_gan if isinstance(row.member_without_gan, str) else None,
             row.member_with_gan if isinstance(row.member_with_gan, str) else None) for row in gan.itertuples()}
    assert rows == {("unet_l1", "pix2pix"), ("unet_ce", "unet_ce_adv"), ("deeplab", None)}
    alone = gan[gan.member_without_gan == "deeplab"].iloc[0]
    assert np.isnan(alone.delta_gan) and alone.supervision == "cross-entropy"
    assert "`unet_ce_adv` vs `unet_ce` is -" in text and "`unet_ce_adv` vs `deeplab`" not in text


def test_members_inside_each_joint_run_are_scored_against_alone_and_the_control(tmp_path):
    cfg, data, runs = make_study(tmp_path, inside=True)
    text = write_report(cfg, data, runs, tmp_path / "report").read_text()
    inside = pd.read_csv(tmp_path / "report" / "members_inside_joint.csv").set_index(["strategy", "member"])
    assert set(inside.index.get_level_values(0)) == {"control", "joint", "joint-no-d"}
    row = inside.loc[("joint", "pix2pix")]
    assert row["miou_inside_mean"] == pytest.approx(_iou(1)) and row["miou_in_control_mean"] == pytest.approx(_iou(2))
    assert row["delta_vs_alone"] == pytest.approx(_mean_delta(INSIDE_ERRORS, ERRORS["pix2pix"]))
    assert row["delta_vs_control"] == pytest.approx(_iou(1) - _iou(2)) and row["delta_vs_control_low"] > 0
    assert row["control"] == "control" and pd.isna(inside.loc[("control", "pix2pix"), "control"])
    assert "### 3c. The members inside each joint run, scored alone" in text
    assert (f"Scored on their own: pix2pix scores {_iou(1):.3f} alone from `joint`'s weights against "
            f"{np.mean([_iou(e) for e in ERRORS['pix2pix']]):.3f} trained on its own") in text
    assert "inside its control `control`" in text and "a better segmenter" in text
    (runs / "seed1" / "evaluate" / "joint@unet_l1_test_tallies.npy").unlink()
    with pytest.raises(UserError, match=r"joint@unet_l1_test_tallies.npy: missing; run `dvc repro -f -s evaluate`"):
        load_study(cfg, data, runs)


def test_leave_one_out_pairs_are_found_from_member_lists_and_answer_part_d(tmp_path):
    """`zz` runs the joint training without pix2pix: the pair is read from the records, whatever the file names."""
    cfg, data, runs = make_study(tmp_path, strategies=[*STRATEGIES, "zz"], without={"zz": ["unet_l1", "unet_ce"]})
    text = write_report(cfg, data, runs, tmp_path / "report").read_text()
    pairs = pd.read_csv(tmp_path / "report" / "leave_one_out.csv")
    assert pairs[["strategy", "without", "member"]].values.tolist() == [["joint", "zz", "pix2pix"]]
    assert pairs.loc[0, "delta"] == pytest.approx(_iou(1) - _iou(3)) and pairs.loc[0, "delta_low"] > 0
    hypothesis = pd.read_csv(tmp_path / "report" / "hypothesis.csv").set_index("strategy")
    assert pd.isna(hypothesis.loc["zz", "control"])  # no control runs without pix2pix: joint's is not its
    assert "(d) Does pix2pix add to the ensemble? Yes: `joint` vs `zz` (the same training, end-to-end, β = 0.5, " \
           "without pix2pix) is +" in text
    assert "(b) Does end-to-end training pay against the control? Yes: `joint`" in text  # the widest run leads


def _pair(low: float, high: float, seeds: int = 3, role: str = "end_to_end") -> dict:
    return {"full": "all", "without": "all-but-gan", "member": "gan", "role": role, "discriminator": True,
            "init": "members", "label": "end-to-end, β = 0.5",
            "delta": {"delta": (low + high) / 2, "low": low, "high": high, "seeds": seeds, "se": (high - low) / 3.92}}


@pytest.mark.parametrize("low, high, seeds, expected", [
    (0.01, 0.03, 3, "(d) Does gan add to the ensemble? Yes: `all` vs `all-but-gan` (the same training, end-to-end, "
                    "β = 0.5, without gan) is +0.020 mIoU (95% interval [+0.010, +0.030] excludes 0) over 3 seeds, "
                    "so gan helps."),
    (-0.03, -0.01, 3, "(d) Does gan add to the ensemble? No, it hurts: `all` vs `all-but-gan`"),
    (-0.01, 0.03, 3, "so gan is not conclusive (the interval includes 0; this study resolves |Δ| ≥ 0.029, about 25 "
                     "seeds would resolve its +0.010)."),
    (0.01, 0.03, 2, "Not conclusive: `all` vs `all-but-gan`"),
])
def test_part_d_on_hand_made_numbers(low, high, seeds, expected):
    sentence = adds_sentence([_pair(-0.5, -0.4, 3, role="stacking"), _pair(low, high, seeds)])
    assert expected in sentence
    assert sentence.startswith("(d) Does gan add to the ensemble? ")  # the end-to-end pair leads, stacking follows
    assert "The other pairs: `all` vs `all-but-gan`" in sentence
    if seeds < 3:
        assert "(2 seeds; a verdict needs at least 3)" in sentence
    assert adds_sentence([]).startswith("(d) Does the adversarial member add to the ensemble? Not tested")


# ---- (e): does ensembling pay? ----------------------------------------------------------------------------------

def _found(low: float, high: float, seeds: int = 3, reference: bool = True) -> dict:
    """Hand-made ensembling_comparison: the best ensemble and member on val, their Δ and the one against the
    reference (a fixed, not conclusive one)."""
    delta = {"delta": (low + high) / 2, "low": low, "high": high, "seeds": seeds, "se": (high - low) / 3.92}
    against = {"delta": 0.0, "low": -0.01, "high": 0.01, "seeds": seeds, "se": 0.02 / 3.92}
    return {"excluded": {"no val score": ["mean"], "fitted on val": ["learned"]}, "ensemble": "joint",
            "member": "unet_ce_adv", "reference": REFERENCE if reference else None,
            "budget": {**BUDGET, "ensemble": ALL_MEMBERS} if reference else None, "delta_member": delta,
            "delta_reference": against if reference else None, "untested": None}


@pytest.mark.parametrize("low, high, seeds, expected", [
    (0.01, 0.03, 3, "(e) Does ensembling pay? Yes: the best ensemble on val, `joint`, vs the best member on val, "
                    "`unet_ce_adv`, is +0.020 mIoU (95% interval [+0.010, +0.030] excludes 0) over 3 seeds, so "
                    "ensembling helps; "),
    (-0.015, -0.003, 3, "(e) Does ensembling pay? No, it hurts: the best ensemble on val, `joint`, vs the best member "
                        "on val, `unet_ce_adv`, is -0.009 mIoU (95% interval [-0.015, -0.003] excludes 0) over 3 "
                        "seeds, so ensembling hurts; "),
    (-0.01, 0.03, 3, "(e) Does ensembling pay? Not conclusive: the best ensemble on val, `joint`, vs the best member "
                     "on val, `unet_ce_adv`, is +0.010 mIoU (95% interval [-0.010, +0.030] includes 0) over 3 "
                     "seeds, so ensembling is not conclusive (the interval includes 0; this study resolves |Δ| ≥ "
                     "0.029, about 25 seeds would resolve its +0.010); "),
    (0.01, 0.03, 2, "(e) Does ensembling pay? Not conclusive: the best ensemble on val, `joint`"),
])
def test_part_e_on_hand_made_numbers(low, high, seeds, expected):
    sentence = ensembling_sentence(_found(low, high, seeds))
    assert sentence.startswith(expected)
    assert ("against one network with the ensemble's budget (`reference`: 18.1M parameters against the "
            "ensemble's 18.2M, 1.02× its members' training FLOPs) it is +0.000 mIoU (95% interval [-0.010, +0.010] "
            "includes 0), so ensembling ") in sentence
    assert sentence.endswith("Not candidates for the best ensemble: `mean` (no val score), `learned` (fitted on val).")
    called = "Not conclusive" not in expected
    assert short(_found(low, high, seeds)["delta_member"]).endswith(", not conclusive") != called
    alone = ensembling_sentence(_found(low, high, seeds, reference=False))
    assert ("against one network with the ensemble's budget it is not tested: no budget-matched network in this "
            "study (`reference:` in params.yaml).") in alone
    untested = ensembling_sentence({**_found(low, high), "untested": "no val scores recorded (rerun evaluate)"})
    assert untested.startswith("(e) Does ensembling pay? Not tested: no val scores recorded (rerun evaluate).")


def test_best_is_picked_on_val_not_test_and_never_a_strategy_fitted_on_val(tmp_path):
    """On test unet_ce and joint are best; on val unet_ce_adv and `mean` are, and `learned` (stacking, fitted on
    val) scores best of all there but is no candidate; `joint-no-d` wrote no val predictions."""
    cfg, data, runs = make_study(tmp_path, members=ALL_MEMBERS, no_val=("joint-no-d",),
                                 errors={"joint": (0, 0, 0), "mean": (1, 1, 1)},
                                 val_errors={"unet_ce_adv": (0, 0, 0), "learned": (0, 0, 0), "mean": (0, 0, 0),
                                             "joint": (3, 3, 3), "unet_ce": (2, 2, 2)})
    text = write_report(cfg, data, runs, tmp_path / "report").read_text()
    assert ("(e) Does ensembling pay? Yes: the best ensemble on val, `mean`, vs the best member on val, "
            "`unet_ce_adv`, is +") in text
    assert "Not candidates for the best ensemble: `joint-no-d` (no val score), `learned` (fitted on val)." in text
    assert "against one network with the ensemble's budget (`reference`: 18.1M parameters" in text
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["delta_best_ensemble_vs_best_member"] == pytest.approx(_iou(1) - _iou(2))
    assert summary["delta_best_ensemble_vs_reference"] == pytest.approx(
        _mean_delta((1, 1, 1), ERRORS[REFERENCE]))
    ensembles = pd.read_csv(tmp_path / "report" / "ensembles.csv")
    assert (ensembles["best_member"] == "unet_ce").all()  # table 2 still compares against the test-best member


def test_a_strategy_fitted_on_val_is_never_the_best_ensemble_even_alone(tmp_path):
    cfg, data, runs = make_study(tmp_path, strategies=["learned", "mean"], no_val=("mean",),
                                 val_errors={"learned": (0, 0, 0)})
    text = write_report(cfg, data, runs, tmp_path / "report").read_text()
    assert ("(e) Does ensembling pay? Not tested: no strategy has a val score it was not fitted on. Not candidates "
            "for the best ensemble: `mean` (no val score), `learned` (fitted on val).") in text
    assert "delta_best_ensemble_vs_best_member" not in json.loads((tmp_path / "report" / "summary.json").read_text())


def test_the_reference_is_never_the_best_member_nor_a_side_of_the_2x2(tmp_path):
    """The reference scores best of all members on test and val, yet every comparison among members passes it by;
    it is still a row of the members' and per-class tables."""
    cfg, data, runs = make_study(tmp_path, members=ALL_MEMBERS, errors={REFERENCE: (0, 0, 0)})
    study = load_study(cfg, data, runs)
    assert study.members == ALL_MEMBERS and study.references == REFERENCES
    assert study.models == ALL_MEMBERS + REFERENCES + STRATEGIES
    text = write_report(cfg, data, runs, tmp_path / "report").read_text()
    assert "the best member on val, `unet_ce`," in text
    assert (pd.read_csv(tmp_path / "report" / "ensembles.csv")["best_member"] == "unet_ce").all()
    gan = pd.read_csv(tmp_path / "report" / "gan_2x2.csv")
    assert REFERENCE not in set(gan["member_without_gan"]) | set(gan["member_with_gan"])
    assert subject(study) == "pix2pix and unet_ce_adv"
    assert REFERENCE in pd.read_csv(tmp_path / "report" / "per_class_iou.csv")["model"].tolist()
    assert REFERENCE not in json.loads((runs / "seed0" / "evaluate" / "joint.json").read_text())["members"]


def test_members_csv_has_the_reference_row_with_its_budget_beside_the_ensembles(tmp_path):
    cfg, data, runs = make_study(tmp_path)
    text = write_report(cfg, data, runs, tmp_path / "report").read_text()
    members = pd.read_csv(tmp_path / "report" / "members.csv").set_index("model")
    assert members["role"].to_dict() == {**dict.fromkeys(MEMBERS, "member"), REFERENCE: "reference"}
    reference = members.loc[REFERENCE]
    assert reference[["budget_inference_params", "ensemble_inference_params", "budget_train_flops",
                      "ensemble_train_flops", "budget_epochs", "ensemble_epochs"]].tolist() == [
        18_130_000, 18_200_000, 1_020_000_000_000_000, 1_000_000_000_000_000, 6, 6]
    assert reference["budget_ensemble"] == " ".join(MEMBERS)
    assert members.loc[MEMBERS, ["budget_inference_params", "ensemble_train_flops"]].isna().all().all()
    row = next(line for line in text.splitlines() if line.startswith("| reference"))
    assert "| reference" in row and "18.13 / 18.20" in row and "1.02×" in row
    assert r"1.02$\times$" in (tmp_path / "report" / "members.tex").read_text()


def test_the_reference_of_params_yaml_is_read_from_its_own_folder_and_stage(tmp_path):
    """`reference:` in params.yaml: no member, its runs in runs/seedK/reference/, written by the `reference` stage."""
    cfg, data, runs = make_study(tmp_path, references=[REFERENCE])
    study = load_study(cfg, data, runs)
    assert study.members == MEMBERS and study.references == [REFERENCE] and study.training_stage(REFERENCE) == REFERENCE
    text = write_report(cfg, data, runs, tmp_path / "report").read_text()
    assert f"against one network with the ensemble's budget (`{REFERENCE}`: 18.1M parameters" in text
    assert pd.read_csv(tmp_path / "report" / "members.csv").set_index("model").loc[REFERENCE, "role"] == "reference"
    (runs / "seed0" / REFERENCE / "predict" / "test_pred.npy").unlink()
    with pytest.raises(UserError, match=rf"seed0/{REFERENCE}/predict/test_pred.npy: missing; run `dvc repro -f -s "
                       rf"{REFERENCE}`"):
        load_study(cfg, data, runs)


def test_records_without_val_scores_or_reference_say_what_is_not_tested(tmp_path):
    cfg, data, runs = make_study(tmp_path, references=())
    for path in runs.glob("seed*/evaluate/*.json"):
        record = json.loads(path.read_text())
        for key in ("val_miou", "val_in_sample", "budget"):
            record.pop(key, None)
        path.write_text(json.dumps(record))
    text = write_report(cfg, data, runs, tmp_path / "report").read_text()
    assert "(e) Does ensembling pay? Not tested: no val scores recorded (rerun evaluate)." in text
    assert "Not tested here: leave-one-out, whether ensembling pays." in text
    cfg, data, runs = make_study(tmp_path / "no-reference", references=())
    text = write_report(cfg, data, runs, tmp_path / "no-reference" / "report").read_text()
    assert "against one network with the ensemble's budget it is not tested: no budget-matched network" in text


def test_a_reference_without_its_budget_says_to_rerun_evaluate(tmp_path):
    cfg, data, runs = make_study(tmp_path)
    path = runs / "seed1" / "evaluate" / "reference.json"
    record = json.loads(path.read_text())
    del record["budget"]["ensemble_train_flops"]
    path.write_text(json.dumps(record))
    with pytest.raises(UserError, match=r"reference.json: a reference network's 'budget' must have width, "
                       r"inference_params, .*; run `dvc repro -f -s evaluate`"):
        load_study(cfg, data, runs)


def _headline(text: str) -> list[str]:
    """The sentences of the paragraph right after conclusion.md's title (none of its numbers ends one)."""
    title, blank, headline, *_ = text.splitlines()
    assert title.startswith("# ") and not blank
    sentences = [sentence.strip() for sentence in re.findall(r".+?[.!?](?=\s|$)", headline)]
    assert " ".join(sentences) == headline
    return sentences


def test_the_headline_gives_each_part_its_number_in_at_most_five_sentences(tmp_path):
    cfg, data, runs = make_study(tmp_path, strategies=[*STRATEGIES, "zz"], without={"zz": ["unet_l1", "unet_ce"]})
    sentences = _headline(write_report(cfg, data, runs, tmp_path / "report").read_text())
    assert len(sentences) == 5
    hypothesis = pd.read_csv(tmp_path / "report" / "hypothesis.csv").set_index("strategy").loc["joint"]
    pair = pd.read_csv(tmp_path / "report" / "leave_one_out.csv").loc[0]
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    (a, b, c, d, e) = sentences
    assert a == "Trained end-to-end with the discriminator in the loop, pix2pix diverged in 0 of 6 runs."
    assert b == (f"End-to-end training (`joint`) against its compute-matched control (`control`): "
                 f"{hypothesis['delta_vs_control']:+.3f} mIoU [95%: {hypothesis['delta_vs_control_low']:+.3f}, "
                 f"{hypothesis['delta_vs_control_high']:+.3f}].")
    assert c.startswith(f"Keeping the discriminator (`joint` vs `joint-no-d`): {_iou(1) - _iou(3):+.3f} mIoU [95%: ")
    assert d == (f"Adding pix2pix to the ensemble (`joint` vs `zz`): {pair['delta']:+.3f} mIoU "
                 f"[95%: {pair['delta_low']:+.3f}, {pair['delta_high']:+.3f}].")
    assert e.startswith("The best ensemble on val against the best member on val (`joint` vs `unet_ce`): "
                        f"{summary['delta_best_ensemble_vs_best_member']:+.3f} mIoU [95%: ")
    assert ("; against one network with the ensemble's budget (`reference`): "
            f"{summary['delta_best_ensemble_vs_reference']:+.3f} mIoU [95%: ") in e
    assert e.endswith(", not conclusive.")  # joint and unet_ce score alike: Δ 0, its interval includes 0


def test_the_headline_names_the_untested_parts_in_one_sentence(tmp_path):
    cfg, data, runs = make_study(tmp_path, seeds=(0,), strategies=["max", "learned"])
    ensembling, untested = _headline(write_report(cfg, data, runs, tmp_path / "report").read_text())
    assert re.fullmatch(rf"The best ensemble on val against the best member on val \(`max` vs `unet_ce`\): "
                        rf"{_iou(2) - _iou(1):+.3f} mIoU \[95%: .+\], not conclusive; against one network with the "
                        r"ensemble's budget \(`reference`\): \+0\.000 mIoU \[95%: .+\], not conclusive\.",
                        ensembling)
    assert untested == ("Not tested here: end-to-end training with the discriminator, a compute-matched control, the "
                        "discriminator's effect, leave-one-out.")


# ---- several studies in one table ----------------------------------------------------------------------------

def test_compare_puts_each_study_in_a_row_with_its_reported_numbers(tmp_path, capsys):
    from seg_p2p.cli import main

    cfg, data, runs = make_study(tmp_path / "a")
    write_report(cfg, data, runs, tmp_path / "reports" / "a")
    cfg, data, runs = make_study(tmp_path / "b", seeds=(0,), strategies=["mean"])
    write_report(cfg.model_copy(update={"name": "one-seed"}), data, runs, tmp_path / "reports" / "b")
    main(["report", "--compare", str(tmp_path / "reports" / "a"), str(tmp_path / "reports" / "b"),
          "--out", str(tmp_path / "compare")])
    assert "comparison table:" in capsys.readouterr().out

    table = pd.read_csv(tmp_path / "compare" / "comparison.csv").set_index("experiment")
    members = pd.read_csv(tmp_path / "reports" / "a" / "members.csv").set_index("model")
    assert table.loc["fake-study", "pix2pix_miou_mean"] == members.loc["pix2pix", "miou_mean"]
    assert table.loc["fake-study", "pix2pix_miou_std"] == members.loc["pix2pix", "miou_std"]
    assert table.loc["fake-study", "seeds"] == 3 and table.loc["one-seed", "seeds"] == 1
    assert table["dataset"].tolist() == ["fakescapes", "fakescapes"]
    assert np.isnan(table.loc["one-seed", "joint_miou_mean"])  # that study has no joint
    text = (tmp_path / "compare" / "comparison.md").read_text()
    header, one_seed = ([cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines()
                        if line.startswith(("| experiment", "| one-seed")))
    cells = dict(zip(header, one_seed))
    assert cells["pix2pix"] == f"{_iou(2):.3f}" and cells["joint"] == "—"  # one seed: a mean without ±; no joint
    assert r"$\pm$" in (tmp_path / "compare" / "comparison.tex").read_text()


@pytest.mark.parametrize("folder, expected", [
    ("empty", "study.json: missing, so"),
    ("no_members", "members.csv: missing"),
])
def test_compare_refuses_a_folder_without_a_report(tmp_path, capsys, folder, expected):
    from seg_p2p.cli import main

    study = json.dumps({"name": "good", "dataset": "fakescapes", "seeds": [0]})
    for name, files in {"good": {"study.json": study, "members.csv": "model,miou_mean,miou_std\npix2pix,0.5,\n",
                                 "ensembles.csv": "strategy,miou_mean,miou_std\nmean,0.6,\n"},
                        "empty": {}, "no_members": {"study.json": study}}.items():
        (tmp_path / name).mkdir()
        for file, text in files.items():
            (tmp_path / name / file).write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--compare", str(tmp_path / "good"), str(tmp_path / folder), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and str(tmp_path / folder) in lines[0]
    assert not (tmp_path / "out").exists()  # nothing written
