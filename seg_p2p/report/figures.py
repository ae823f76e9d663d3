"""The report's three figures, drawn without pyplot so nothing depends on a display or global state."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from seg_p2p.atomic import atomic_path
from seg_p2p.data.spec import colour_table
from seg_p2p.errors import UserError
from seg_p2p.ragged import RaggedArray
from seg_p2p.report.study import Study
from seg_p2p.stored import rerun

QUALITATIVE_IMAGES = 4


def _save(fig: Figure, path: Path) -> None:
    """Render with matplotlib's Agg canvas (Figure.savefig's default for PNG; no pyplot state)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _colourise(labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Class ids -> RGB by the dataset palette; void and unknown ids are black."""
    return colour_table(colours)[labels]


def qualitative_figure(study: Study, path: Path) -> None:
    """A few test images: photo, truth, then every member's and strategy's prediction (first seed)."""
    preds = {m: RaggedArray(study.pred_path(m).with_suffix(""), study.pred_fix(m)) for m in study.models}
    photos, masks = (RaggedArray(study.data_dir / f"test_{part}", rerun("prepare")) for part in ("photos", "masks"))
    for model, pred in preds.items():
        if len(pred) != len(masks):
            raise UserError(f"{study.pred_path(model)}: {len(pred)} images but test_masks.npy has {len(masks)}; "
                            "run `dvc repro` to bring it up to date")
    picks = np.unique(np.linspace(0, len(masks) - 1, min(QUALITATIVE_IMAGES, len(masks))).round().astype(int))
    columns = ["photo", "truth", *study.models]
    fig = Figure(figsize=(1.6 * len(columns), 1.7 * len(picks)), layout="constrained")
    axes = fig.subplots(len(picks), len(columns), squeeze=False)
    for row, index in enumerate(picks):
        h, w = preds[study.models[0]][index].shape  # the evaluation size (every model predicts at it)
        photo = np.asarray(Image.fromarray(np.asarray(photos[index])).resize((w, h), Image.BILINEAR))
        truth = np.asarray(Image.fromarray(np.asarray(masks[index])).resize((w, h), Image.NEAREST))
        images = [photo, _colourise(truth, study.colours)]
        images += [_colourise(np.asarray(preds[m][index]), study.colours) for m in study.models]
        for col, image in enumerate(images):
            ax = axes[row, col]
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(columns[col], fontsize=8)
    _save(fig, path)


def per_class_figure(study: Study, per_class: pd.DataFrame, path: Path) -> None:
    """Grouped bars: per class, one bar per model (mean IoU over seeds)."""
    x = np.arange(len(study.classes))
    width = 0.8 / len(per_class)
    fig = Figure(figsize=(max(6.0, 0.25 * len(x) * len(per_class) + 2), 4), layout="constrained")
    ax = fig.subplots()
    for i, row in enumerate(per_class.itertuples(index=False)):
        ax.bar(x + (i - (len(per_class) - 1) / 2) * width, row[1:], width, label=row[0])
    ax.set_xticks(x, study.classes, rotation=45, ha="right")
    ax.set_ylabel("IoU (mean over seeds)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    _save(fig, path)


def _curves_panel(ax, study: Study, model: str) -> None:
    """The minimised losses (left axis) and val mIoU (right axis) of one model, every seed."""
    right = ax.twinx()
    right.set_ylim(0, 1)
    right.set_ylabel("val mIoU")
    for i, seed in enumerate(study.seeds):
        history = study.history(model, seed)
        losses = [c for c in history.columns if c.startswith("loss_")]
        for j, column in enumerate(losses):
            ax.plot(history["epoch"], history[column], color=f"C{j}", alpha=1 if i == 0 else 0.5,
                    label=column if i == 0 else None)
        if "val_miou" in history:
            val = history.dropna(subset=["val_miou"])
            right.plot(val["epoch"], val["val_miou"], color="black", linestyle="--", alpha=1 if i == 0 else 0.5,
                       label="val mIoU" if i == 0 else None)
        if losses and history[losses].min().min() > 0:  # NaN-safe: min skips missing values
            ax.set_yscale("log")
    ax.set_title(f"{model} (seeds {', '.join(map(str, study.seeds))})", fontsize=9)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("loss")
    handles = ax.get_legend_handles_labels()
    extra = right.get_legend_handles_labels()
    ax.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=7)


def training_curves_figure(study: Study, path: Path) -> None:
    """One panel per model that trained with its own history (members, end-to-end strategies).
    Diagnostics (D outputs, gradient norms, lr, seconds) stay in history.csv and MLflow."""
    models = study.trained
    ncols = min(3, len(models))
    fig = Figure(figsize=(4.5 * ncols, 3.2 * math.ceil(len(models) / ncols)), layout="constrained")
    axes = fig.subplots(math.ceil(len(models) / ncols), ncols, squeeze=False).ravel()
    for ax in axes[len(models):]:
        ax.set_visible(False)
    for ax, model in zip(axes, models):
        _curves_panel(ax, study, model)
    _save(fig, path)


def beta_figure(points: pd.DataFrame, references: dict[str, float], path: Path) -> None:
    """Left: test mIoU against beta (fine-tuned joint runs, beta = 0 being the control), mean over seeds with its 95%
    t-interval; right: the paired Δ against each run's own control with the tables' bootstrap interval, which
    resolves what the unpaired intervals hide. One line per member set, discriminator setting and balancing mode
    (points' `line`), so no line joins two member sets; `references` (label -> mIoU) as dashed lines."""
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    lines = list(points.groupby("line", sort=False))
    for i, (label, line) in enumerate(lines):
        line = line.sort_values("beta")
        x = line["beta"] + 0.01 * (i - (len(lines) - 1) / 2)  # nudged apart
        for ax, (mean, low, high) in ((left, ("miou_mean", "miou_low", "miou_high")),
                                      (right, ("delta_vs_control", "delta_vs_control_low", "delta_vs_control_high"))):
            errors = np.vstack([line[mean] - line[low], line[high] - line[mean]])
            ax.errorbar(x, line[mean], yerr=np.nan_to_num(errors), marker="o", capsize=3, color=f"C{i}", label=label)
    for j, (label, value) in enumerate(references.items()):
        left.axhline(value, color=f"C{j + len(lines)}", linestyle="--", linewidth=1, label=label)
    right.axhline(0.0, color="grey", linewidth=0.8)
    left.set_ylabel("test mIoU (mean over seeds, 95% t-interval)")
    right.set_ylabel("Δ mIoU vs its control (paired, 95% bootstrap)")
    left.set_xlabel("β (weight of the fusion loss in the members' gradient; 0 = control)")
    right.set_xlabel("β (0 = control)")
    for ax in (left, right):
        ax.set_xlim(-0.05, 1.05)
    left.legend(fontsize=7)
    _save(fig, path)
