"""`seg-p2p evaluate`: every member, the budget-matched reference and every strategy of one seed, measured alike.

Scores come from the stored test predictions against the test masks, through the same torchmetrics scorer as
validation; parameters, FLOPs (torch.utils.flop_counter) and inference time from the architectures (a strategy's kind
measures its own), measured on one model input on the study's device (`train.device`; recorded as `cost_device`) and
scaled to a whole test photo (its windows and flips). The val predictions' mIoU is recorded too (`val_miou`), so the
report picks the best member and the best ensemble without looking at test. Writes `{out}/{model}.json`,
`{out}/{model}_test_tallies.npy` (per-image class tallies, for the report's bootstrap), and `{seed_dir}/metrics.json`,
the flat summary `dvc metrics show` reads.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from seg_p2p.atomic import save_npy, write_json
from seg_p2p.budget import reference_budget
from seg_p2p.config import Config
from seg_p2p.device import device_name, select_device
from seg_p2p.ensemble.strategy import CostInputs, combiner_kind, load_strategy
from seg_p2p.errors import UserError
from seg_p2p.inference import Inference
from seg_p2p.run_paths import REFERENCE, inside, inside_predict_dir, model_dir
from seg_p2p.metrics import SegmentationScorer, inference_cost
from seg_p2p.models import build_member, role_counts
from seg_p2p.predict import pred_array
from seg_p2p.stored import read_json, rerun, retrain
from seg_p2p.tracking import Tracker

TIMING_BATCH = 4
TRAINED_BY = {"member": "train", "reference": "reference", "ensemble": "ensemble"}  # record kind -> its training stage
PREDICTED_BY = TRAINED_BY | {"member": "predict"}  # record kind -> the stage that wrote its predictions
SUMMARY_SCORES = ("miou", "pixel_accuracy", "mean_class_accuracy")  # metrics.json's, per model


def cropped_photo(photo: np.ndarray, size: int) -> torch.Tensor:
    """A test photo as one model input: resized to size x size, in [-1, 1]."""
    from seg_p2p.data.transforms import photo_tensor, resize

    return photo_tensor(resize(size)(image=np.asarray(photo))["image"])


def read_summary(path: Path, stage: str) -> dict:
    """A training's summary.json; {} for a model that does not train."""
    return read_json(path, retrain(stage)) if path.exists() else {}


def training_record(summary: dict) -> dict:
    return {key: summary.get(key) for key in ("train_seconds", "seconds_per_step", "discriminator_collapse")}


def member_entry(cfg: Config, name: str, spec, example: torch.Tensor, seed_dir: Path, kind: str = "member") -> dict:
    model = build_member(cfg, name, spec).to(example.device)
    summary = read_summary(model_dir(seed_dir, name, cfg.members) / "train" / "summary.json", TRAINED_BY[kind])
    with torch.no_grad():
        measured = inference_cost(model.inference_network(), example,
                                  lambda x: model.probabilities(model({"photo": x})).argmax(1))
    return {"kind": kind, "params": role_counts(model), **measured, **training_record(summary),
            "diverged": summary.get("diverged"), "curves": True, "hypothesis": None, "supervision": model.supervision,
            "budget": None, "val_in_sample": False}


def reference_entry(cfg: Config, spec, example: torch.Tensor, seed_dir: Path, train_images: int) -> dict:
    """The budget-matched network's record: a member's, with its budget beside the ensemble's (seg_p2p.budget)."""
    steps_per_epoch = math.ceil(train_images / cfg.train.batch_size)
    return member_entry(cfg, REFERENCE, spec, example, seed_dir, "reference") | {
        "budget": reference_budget(cfg, spec).record(steps_per_epoch)}


def strategy_entry(cfg: Config, name: str, spec, example: torch.Tensor, seed_dir: Path, strategies_dir: Path,
                   members: dict[str, dict]) -> dict:
    strategy = load_strategy(cfg, name, strategies_dir)
    kind = combiner_kind(strategy)
    measured = kind.cost(CostInputs(cfg, strategy, spec, example, members))
    summary = read_summary(model_dir(seed_dir, name, cfg.members) / "train" / "summary.json", "ensemble")
    return {"kind": "ensemble", "combiner": strategy.combiner, "members": strategy.members, **measured,
            **training_record(summary), "diverged": summary.get("diverged", False) if kind.trained else None,
            **kind.report_fields(strategy), "members_inside": {} if kind.scores_members_inside else None,
            "val_in_sample": kind.fits_on_val}


def per_photo(entry: dict, inputs: float) -> dict:
    """A cost measured on one model input, for a whole test photo (`inputs`: Inference.inputs_per_photo). Exact for
    networks that run on every input; a fusion net or fixed combiner that runs once on the whole photo is counted
    per window too, which overstates its (small) share by the ratio of the windows' area to the photo's."""
    return entry | {"flops_per_image": round(entry["flops_per_image"] * inputs),
                    "inference_ms_per_image": round(entry["inference_ms_per_image"] * inputs, 3),
                    "model_inputs_per_image": inputs}


def score(predict_dir: Path, stage: str, truth, names: list[str], split: str = "test") -> tuple[dict, np.ndarray]:
    """Scores and per-image class tallies of a stored prediction of `split` against its masks (`truth[i]`: image i's
    (H, W) mask at the evaluation size), one image at a time."""
    pred_file = predict_dir / f"{split}_pred.npy"
    pred = pred_array(predict_dir, split, rerun(stage))
    shapes = [tuple(truth[i].shape) for i in range(len(truth))]
    if pred.shapes != shapes:
        raise UserError(f"{pred_file}: predictions of {len(pred)} images of sizes {sorted(set(pred.shapes))[:3]} do "
                        f"not match the {len(shapes)} {split} masks ({sorted(set(shapes))[:3]}); {rerun(stage)}")
    scorer = SegmentationScorer(names)
    for i in range(len(pred)):
        scorer.update(torch.from_numpy(pred[i].astype(np.int64))[None], torch.as_tensor(np.asarray(truth[i]))[None])
    return scorer.compute()


def track(cfg: Config, name: str, seed: int, scores: dict, entry: dict) -> None:
    """One MLflow run per model with its test scores and costs, all under the experiment's parent run, so
    members and strategies compare side by side (filter `tags.stage = 'evaluate'`)."""
    role = "strategy" if entry["kind"] == "ensemble" else "member"
    tags = {"stage": "evaluate", "model": name, "kind": entry["kind"], role: name, "seed": str(seed)}
    params = {"members": ", ".join(entry["members"]), "combiner": entry["combiner"]} if role == "strategy" else {}
    metrics = {f"test_{key}": scores[key] for key in SUMMARY_SCORES}
    metrics |= {f"test_iou.{cls}": value for cls, value in scores["per_class_iou"].items() if value is not None}
    metrics |= {f"params_{part}": count for part, count in entry["params"].items()}
    metrics |= {"gflops_per_image": entry["flops_per_image"] / 1e9,
                "inference_ms_per_image": entry["inference_ms_per_image"]}
    metrics |= {key: float(entry[key]) for key in ("train_seconds", "seconds_per_step", "diverged", "val_miou")
                if entry.get(key) is not None}
    metrics |= {f"inside_test_miou.{member}": s["miou"] for member, s in (entry.get("members_inside") or {}).items()}
    with Tracker(cfg, f"evaluate/{name}", tags, params) as tracker:
        tracker.log_metrics(metrics)


def split_truth(cfg: Config, data, split: str, seed: int) -> list:
    """A split's masks at the evaluation size: native (slide mode, read as needed) or resized with the photos (resize
    mode)."""
    from seg_p2p.data.dataset import SegmentationDataset
    from seg_p2p.data.transforms import build_transform

    if cfg.inference.mode == "slide":
        return data.masks(split)
    dataset = SegmentationDataset(data, split, build_transform(cfg.data, cfg.inference.mode, train=False), seed)
    return [dataset[i]["mask"] for i in range(len(dataset))]


def model_entries(cfg: Config, data, seed_dir: Path, strategies_dir: Path, device: torch.device) -> dict[str, dict]:
    """Every model's record but its scores: members, the reference, strategies, costs per whole test photo.
    Costs are measured on model inputs (crop_size photos, as a slide window) on the study's device (train.device),
    where its models run, then scaled to a whole test photo."""
    spec = data.spec
    example = torch.stack([cropped_photo(data.photos("test")[i], cfg.data.crop_size)
                           for i in range(min(TIMING_BATCH, len(data.names("test"))))]).to(device)
    entries = {name: member_entry(cfg, name, spec, example, seed_dir) for name in cfg.members}
    if cfg.reference is not None:
        entries[REFERENCE] = reference_entry(cfg, spec, example, seed_dir, len(data.names("train")))
    entries |= {name: strategy_entry(cfg, name, spec, example, seed_dir, strategies_dir, entries)
                for name in cfg.strategies}  # from the members' per-input costs: scaled once, below
    inputs = Inference.from_config(cfg).inputs_per_photo(data.sizes("test"))
    return {name: per_photo(entry, inputs) | {"cost_device": device_name(device)} for name, entry in entries.items()}


def evaluate_seed(cfg: Config, seed: int, data_dir: Path, seed_dir: Path, out_dir: Path,
                  strategies_dir: Path) -> dict:
    from seg_p2p.data.prepare import PreparedData

    data = PreparedData(data_dir)
    names = data.spec.names
    truth, val_truth = split_truth(cfg, data, "test", seed), split_truth(cfg, data, "val", seed)
    torch.manual_seed(seed)
    entries = model_entries(cfg, data, seed_dir, strategies_dir, select_device(cfg.train.device))
    for name, entry in entries.items():  # every stored prediction checked before the first output is written
        folder = model_dir(seed_dir, name, cfg.members)
        inside_dirs = ([inside_predict_dir(folder, m) for m in entry["members"]]
                       if entry.get("members_inside") is not None else [])
        for predict_dir in (folder / "predict", *inside_dirs):
            pred_array(predict_dir, "test", rerun(PREDICTED_BY[entry["kind"]]))
    flat, tracked = {}, {}
    for name, entry in entries.items():
        stage, folder = PREDICTED_BY[entry["kind"]], model_dir(seed_dir, name, cfg.members)
        scores, tallies = score(folder / "predict", stage, truth, names)
        save_npy(out_dir / f"{name}_test_tallies.npy", tallies)
        if entry.get("members_inside") is not None:  # each member as the joint run trained it, scored alone
            for member in entry["members"]:
                alone, tallies = score(inside_predict_dir(folder, member), "ensemble", truth, names)
                save_npy(out_dir / f"{inside(name, member)}_test_tallies.npy", tallies)
                entry["members_inside"][member] = {key: alone[key] for key in SUMMARY_SCORES}
        # val: how the report picks the best member and the best ensemble without looking at test
        written = (folder / "predict" / "val_pred.npy").exists() and len(val_truth)
        entry["val_miou"] = score(folder / "predict", stage, val_truth, names, "val")[0]["miou"] if written else None
        write_json(out_dir / f"{name}.json", {"model": name, "seed": seed, **scores, **entry})
        tracked[name] = scores
        flat[name] = {key: round(scores[key], 4) for key in SUMMARY_SCORES}
    write_json(seed_dir / "metrics.json", flat)
    for name, scores in tracked.items():  # after every check passed: a bad input leaves no runs behind
        track(cfg, name, seed, scores, entries[name])
    rows = [{"model": name, "class": cls, "iou": value}
            for name, scores in tracked.items() for cls, value in scores["per_class_iou"].items() if value is not None]
    write_json(seed_dir / "per_class_iou.json", rows)
    return flat
