"""`seg-p2p evaluate`: every member and strategy of one seed, measured the same way.

Scores come from the stored test predictions against the test masks (torchmetrics semantics);
parameters, FLOPs (torch.utils.flop_counter) and inference time from the architectures. Writes
`{out}/{model}.json`, `{out}/{model}_test_confusion.npy` (per-image, for the report's bootstrap),
and `{seed_dir}/metrics.json`, the flat summary that `dvc metrics show` reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from seg_p2p.atomic import save_npy, write_json
from seg_p2p.config import Config
from seg_p2p.ensemble.combiners import combine
from seg_p2p.ensemble.fusion import FusionNet, JointEnsemble
from seg_p2p.ensemble.strategy import FIXED_COMBINERS, load_strategy
from seg_p2p.errors import UserError
from seg_p2p.layout import model_dir
from seg_p2p.metrics import confusion_matrices, flops_per_image, inference_ms_per_image, scores_from_confusion
from seg_p2p.models import build_member, parameter_counts
from seg_p2p.tracking import Tracker

ROLES = ("generator", "discriminator", "fusion", "training", "inference")
TIMING_BATCH = 4


def read_summary(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def load_pred(path: Path, stage: str) -> torch.Tensor:
    if not path.exists():
        raise UserError(f"{path}: missing; run `dvc repro {stage}` first")
    return torch.from_numpy(np.load(path).astype(np.int64))


def cost(model: torch.nn.Module, example: torch.Tensor, predict) -> dict:
    model.eval()
    return {"flops_per_image": flops_per_image(model, example[:1]),
            "inference_ms_per_image": round(inference_ms_per_image(predict, example), 3)}


def member_entry(cfg: Config, name: str, spec, example: torch.Tensor, seed_dir: Path) -> dict:
    model = build_member(cfg, name, spec)
    summary = read_summary(model_dir(seed_dir, name, cfg.members) / "train" / "summary.json")
    with torch.no_grad():
        measured = cost(model.inference_network(), example,
                        lambda x: model.probabilities(model({"photo": x})).argmax(1))
    counts = parameter_counts(model)
    return {"kind": "member", "params": {role: counts.get(role, 0) for role in ROLES}, **measured,
            "train_seconds": summary.get("train_seconds"), "seconds_per_step": summary.get("seconds_per_step"),
            "diverged": summary.get("diverged"), "discriminator_collapse": summary.get("discriminator_collapse")}


def strategy_entry(cfg: Config, name: str, spec, example: torch.Tensor, seed_dir: Path, strategies_dir: Path,
                   members: dict[str, dict]) -> dict:
    strategy = load_strategy(cfg, name, strategies_dir)
    parts = [members[m] for m in strategy.members]
    params = {role: sum(p["params"].get(role, 0) for p in parts) for role in ROLES}
    flops = sum(p["flops_per_image"] for p in parts)
    ms = sum(p["inference_ms_per_image"] for p in parts)
    num_classes = spec.num_classes
    size = example.shape[-2:]
    if strategy.combiner in FIXED_COMBINERS:
        probs = torch.rand(len(parts), TIMING_BATCH, num_classes, *size).numpy()
        extra = {"flops_per_image": 0,
                 "inference_ms_per_image": inference_ms_per_image(lambda _: combine(strategy.combiner, probs),
                                                                   example)}
    elif strategy.combiner == "learned":
        probe = _FusionProbe(FusionNet(len(parts), num_classes, strategy.fusion), len(parts), num_classes)
        with torch.no_grad():
            extra = cost(probe, example, probe)
        params["fusion"] = sum(p.numel() for p in probe.parameters())
        params["training"] += params["fusion"]
        params["inference"] += params["fusion"]
    else:
        joint = JointEnsemble({m: build_member(cfg, m, spec) for m in strategy.members}, num_classes,
                              strategy.fusion, strategy.discriminator)
        counts = parameter_counts(joint)
        params = {role: counts.get(role, 0) for role in ROLES}
        with torch.no_grad():
            measured = cost(joint.inference_network(), example, joint.inference_network())
        flops, ms, extra = 0, 0.0, measured
    summary = read_summary(model_dir(seed_dir, name, cfg.members) / "train" / "summary.json")
    return {"kind": "ensemble", "combiner": strategy.combiner, "members": strategy.members, "params": params,
            "flops_per_image": flops + extra["flops_per_image"],
            "inference_ms_per_image": round(ms + extra["inference_ms_per_image"], 3),
            "train_seconds": summary.get("train_seconds"), "seconds_per_step": summary.get("seconds_per_step"),
            "diverged": summary.get("diverged", False) if strategy.combiner not in FIXED_COMBINERS else None,
            "discriminator_collapse": summary.get("discriminator_collapse")}


class _FusionProbe(torch.nn.Module):
    """Counts the fusion net's FLOPs on member-probability inputs of the right shape."""

    def __init__(self, fusion: FusionNet, num_members: int, num_classes: int):
        super().__init__()
        self.fusion, self.num_members, self.num_classes = fusion, num_members, num_classes

    def forward(self, photo):
        n, _, h, w = photo.shape
        return self.fusion([photo.new_zeros(n, self.num_classes, h, w)] * self.num_members, photo)


def track(cfg: Config, name: str, seed: int, scores: dict, entry: dict) -> None:
    """One MLflow run per model with its test scores and costs, all under the experiment's parent run, so
    members and strategies compare side by side (filter `tags.stage = 'evaluate'`)."""
    role = "member" if entry["kind"] == "member" else "strategy"
    tags = {"stage": "evaluate", "model": name, "kind": entry["kind"], role: name, "seed": str(seed)}
    params = {"members": ", ".join(entry["members"]), "combiner": entry["combiner"]} if role == "strategy" else {}
    metrics = {f"test_{key}": scores[key] for key in ("miou", "pixel_accuracy", "mean_class_accuracy")}
    metrics |= {f"test_iou.{cls}": value for cls, value in scores["per_class_iou"].items() if value is not None}
    metrics |= {f"params_{part}": count for part, count in entry["params"].items()}
    metrics |= {"gflops_per_image": entry["flops_per_image"] / 1e9,
                "inference_ms_per_image": entry["inference_ms_per_image"]}
    metrics |= {key: float(entry[key]) for key in ("train_seconds", "seconds_per_step", "diverged")
                if entry.get(key) is not None}
    with Tracker(cfg, f"evaluate/{name}", tags, params) as tracker:
        tracker.log_metrics(metrics)


def evaluate_seed(cfg: Config, seed: int, data_dir: Path, seed_dir: Path, out_dir: Path,
                  strategies_dir: Path) -> dict:
    from seg_p2p.data.dataset import SegmentationDataset
    from seg_p2p.data.prepare import PreparedData
    from seg_p2p.data.transforms import build_transform

    data = PreparedData(data_dir)
    spec = data.spec
    test = SegmentationDataset(data, "test", build_transform(cfg.data, train=False), seed)
    truth = torch.stack([test[i]["mask"] for i in range(len(test))])
    example = torch.stack([test[i]["photo"] for i in range(min(TIMING_BATCH, len(test)))])
    torch.manual_seed(seed)

    entries = {name: member_entry(cfg, name, spec, example, seed_dir) for name in cfg.members}
    entries |= {name: strategy_entry(cfg, name, spec, example, seed_dir, strategies_dir, entries)
                for name in cfg.strategies}
    flat, tracked = {}, {}
    for name, entry in entries.items():
        stage = "predict" if entry["kind"] == "member" else "ensemble"
        folder = model_dir(seed_dir, name, cfg.members) / "predict"
        pred = load_pred(folder / "test_pred.npy", stage)
        if pred.shape != truth.shape:
            raise UserError(f"{folder}: predictions of shape {tuple(pred.shape)} do not match "
                            f"the test masks {tuple(truth.shape)}; rerun `dvc repro {stage}`")
        confusion = confusion_matrices(pred, truth, spec.num_classes).numpy()
        scores = scores_from_confusion(confusion.sum(0), spec.names)
        save_npy(out_dir / f"{name}_test_confusion.npy", confusion)
        write_json(out_dir / f"{name}.json", {"model": name, "seed": seed, **scores, **entry})
        tracked[name] = scores
        flat[name] = {key: round(scores[key], 4) for key in ("miou", "pixel_accuracy", "mean_class_accuracy")}
    write_json(seed_dir / "metrics.json", flat)
    for name, scores in tracked.items():  # after every check passed: a bad input leaves no runs behind
        track(cfg, name, seed, scores, entries[name])
    rows = [{"model": name, "class": cls, "iou": value}
            for name in entries for cls, value in json.loads((out_dir / f"{name}.json").read_text())[
                "per_class_iou"].items() if value is not None]
    write_json(seed_dir / "per_class_iou.json", rows)
    return flat
