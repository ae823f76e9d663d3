"""`seg-p2p evaluate`: every member and strategy of one seed, measured the same way.

Scores come from the stored test predictions against the test masks, through the same torchmetrics scorer
as validation; parameters, FLOPs (torch.utils.flop_counter) and inference time from the architectures (a
strategy's kind measures its own). Writes `{out}/{model}.json`, `{out}/{model}_test_confusion.npy`
(per-image, for the report's bootstrap), and `{seed_dir}/metrics.json`, the flat summary `dvc metrics show` reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from seg_p2p.atomic import save_npy, write_json
from seg_p2p.config import Config
from seg_p2p.ensemble.strategy import CostInputs, combiner_kind, load_strategy
from seg_p2p.errors import UserError
from seg_p2p.layout import model_dir
from seg_p2p.metrics import SegmentationScorer, inference_cost
from seg_p2p.models import build_member, role_counts
from seg_p2p.tracking import Tracker

TIMING_BATCH = 4
SCORE_CHUNK = 16  # test images scored at a time


def read_summary(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def training_record(summary: dict) -> dict:
    return {key: summary.get(key) for key in ("train_seconds", "seconds_per_step", "discriminator_collapse")}


def member_entry(cfg: Config, name: str, spec, example: torch.Tensor, seed_dir: Path) -> dict:
    model = build_member(cfg, name, spec)
    summary = read_summary(model_dir(seed_dir, name, cfg.members) / "train" / "summary.json")
    with torch.no_grad():
        measured = inference_cost(model.inference_network(), example,
                                  lambda x: model.probabilities(model({"photo": x})).argmax(1))
    return {"kind": "member", "params": role_counts(model), **measured, **training_record(summary),
            "diverged": summary.get("diverged"), "curves": True, "hypothesis": None}


def strategy_entry(cfg: Config, name: str, spec, example: torch.Tensor, seed_dir: Path, strategies_dir: Path,
                   members: dict[str, dict]) -> dict:
    strategy = load_strategy(cfg, name, strategies_dir)
    kind = combiner_kind(strategy)
    measured = kind.cost(CostInputs(cfg, strategy, spec, example, members))
    summary = read_summary(model_dir(seed_dir, name, cfg.members) / "train" / "summary.json")
    return {"kind": "ensemble", "combiner": strategy.combiner, "members": strategy.members, **measured,
            **training_record(summary), "diverged": summary.get("diverged", False) if kind.trained else None,
            **kind.report_fields(strategy)}


def score(pred_path: Path, stage: str, truth: torch.Tensor, names: list[str]) -> tuple[dict, np.ndarray]:
    """Scores and per-image confusions of a stored prediction against the test masks."""
    if not pred_path.exists():
        raise UserError(f"{pred_path}: missing; run `dvc repro {stage}` first")
    pred = np.load(pred_path, mmap_mode="r")
    if pred.shape != tuple(truth.shape):
        raise UserError(f"{pred_path.parent}: predictions of shape {tuple(pred.shape)} do not match "
                        f"the test masks {tuple(truth.shape)}; rerun `dvc repro {stage}`")
    scorer = SegmentationScorer(names)
    for start in range(0, len(pred), SCORE_CHUNK):
        scorer.update(torch.from_numpy(pred[start:start + SCORE_CHUNK].astype(np.int64)),
                      truth[start:start + SCORE_CHUNK])
    return scorer.compute()


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
        scores, confusion = score(model_dir(seed_dir, name, cfg.members) / "predict" / "test_pred.npy", stage,
                                  truth, spec.names)
        save_npy(out_dir / f"{name}_test_confusion.npy", confusion)
        write_json(out_dir / f"{name}.json", {"model": name, "seed": seed, **scores, **entry})
        tracked[name] = scores
        flat[name] = {key: round(scores[key], 4) for key in ("miou", "pixel_accuracy", "mean_class_accuracy")}
    write_json(seed_dir / "metrics.json", flat)
    for name, scores in tracked.items():  # after every check passed: a bad input leaves no runs behind
        track(cfg, name, seed, scores, entries[name])
    rows = [{"model": name, "class": cls, "iou": value}
            for name, scores in tracked.items() for cls, value in scores["per_class_iou"].items() if value is not None]
    write_json(seed_dir / "per_class_iou.json", rows)
    return flat
