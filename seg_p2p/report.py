"""The conclusion of a study: tables, figures and a verdict in words, built from files alone.

Reads what `prepare`, `train`, `predict`, `ensemble` and `evaluate` wrote (the layout in
`write_report` is the contract), so it reruns in seconds without a model or a GPU. Numbers are
means over seeds; every difference carries a 95% bootstrap interval over test images, and the
verdict sentences are generated from those intervals so the words can never disagree with the table.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from seg_p2p.atomic import atomic_path, write_json, write_text
from seg_p2p.config import Config
from seg_p2p.layout import model_dir
from seg_p2p.errors import UserError
from seg_p2p.metrics import bootstrap_delta

HYPOTHESIS_ROLES = {"learned": "frozen stacking", "joint": "end-to-end, with discriminator",
                    "joint-no-d": "end-to-end, no discriminator"}
JOINT = ("joint", "joint-no-d")  # strategies trained end-to-end: they have their own train/history.csv
RECORD_KEYS = ("miou", "pixel_accuracy", "mean_class_accuracy", "per_class_iou", "params", "flops_per_image",
               "train_seconds", "seconds_per_step", "diverged")
PARAM_KEYS = ("generator", "discriminator", "training", "inference")
BOOTSTRAP_SAMPLES = 1000
QUALITATIVE_IMAGES = 4
LATEX = {"±": r"$\pm$", "Δ": r"$\Delta$", "—": "--"}


def _require(path: Path, stage: str) -> Path:
    if not path.is_file():
        raise UserError(f"{path}: missing; run `dvc repro {stage}` to make it")
    return path


def _read_json(path: Path, stage: str) -> dict:
    try:
        return json.loads(_require(path, stage).read_text())
    except json.JSONDecodeError:
        raise UserError(f"{path}: not valid JSON; run `dvc repro {stage}` again") from None


@dataclass
class Study:
    """Everything the report reads: the dataset's classes and, per model, one evaluate record per seed."""

    cfg: Config
    data_dir: Path
    runs_dir: Path
    dataset: str
    classes: list[str]
    colours: np.ndarray  # (C,3) uint8
    evals: dict[str, list[dict]]
    _confusions: dict = field(default_factory=dict, repr=False)
    _histories: dict = field(default_factory=dict, repr=False)

    @property
    def seeds(self) -> list[int]:
        return list(self.cfg.seeds)

    @property
    def members(self) -> list[str]:
        return list(self.cfg.members)

    @property
    def strategies(self) -> list[str]:
        return list(self.cfg.strategies)

    @property
    def models(self) -> list[str]:
        return self.members + self.strategies

    def confusion_path(self, model: str, seed: int) -> Path:
        return self.runs_dir / f"seed{seed}" / "evaluate" / f"{model}_test_confusion.npy"

    def pred_path(self, model: str) -> Path:
        """Test predictions of the first seed: the qualitative grid shows one run."""
        return model_dir(self.runs_dir / f"seed{self.seeds[0]}", model, self.members) / "predict" / "test_pred.npy"

    def history_path(self, model: str, seed: int) -> Path:
        return model_dir(self.runs_dir / f"seed{seed}", model, self.members) / "train" / "history.csv"

    @property
    def trained(self) -> list[str]:
        """Models with a training history: the members and the end-to-end strategies."""
        return self.members + [s for s in self.strategies if s in JOINT]

    def inputs(self) -> list[tuple[Path, str]]:
        """Every file read after the evaluate records, with the stage that makes it."""
        files = [(self.data_dir / "test_photos.npy", "prepare"), (self.data_dir / "test_masks.npy", "prepare")]
        files += [(self.confusion_path(m, seed), "evaluate") for seed in self.seeds for m in self.models]
        files += [(self.pred_path(m), "predict" if m in self.members else "ensemble") for m in self.models]
        files += [(self.history_path(m, seed), "train" if m in self.members else "ensemble")
                  for seed in self.seeds for m in self.trained]
        return files

    def history(self, model: str, seed: int) -> pd.DataFrame:
        """A trained model's per-epoch history.csv, read once (the curves and the gradient sentence use it)."""
        key = (model, seed)
        if key not in self._histories:
            path = self.history_path(model, seed)
            history = pd.read_csv(path)
            if "epoch" not in history:
                raise UserError(f"{path}: no 'epoch' column; run `dvc repro train` again")
            self._histories[key] = history
        return self._histories[key]

    def confusion(self, model: str, index: int) -> np.ndarray:
        """Per-image test confusions (N,C,C) of one model for the seed at `index` in cfg.seeds."""
        key = (model, index)
        if key not in self._confusions:
            path = self.confusion_path(model, self.seeds[index])
            confusion = np.load(path)
            expected = (self.n_test, len(self.classes), len(self.classes))
            if confusion.shape != expected:
                raise UserError(f"{path}: shape {confusion.shape}, expected {expected} (test images, classes, "
                                "classes); run `dvc repro evaluate` again")
            self._confusions[key] = confusion
        return self._confusions[key]

    @cached_property
    def n_test(self) -> int:
        return len(np.load(self.data_dir / "test_masks.npy", mmap_mode="r"))

    def values(self, model: str, key: str) -> list[float]:
        """One record field across seeds, nulls dropped."""
        return [record[key] for record in self.evals[model] if record[key] is not None]


def load_study(cfg: Config, data_dir: Path, runs_dir: Path) -> Study:
    """Read the spec and every evaluate record, and check that all other inputs exist before any is used."""
    spec = _read_json(data_dir / "spec.json", "prepare")
    try:
        classes = [c["name"] for c in spec["classes"]]
        colours = np.array([c["colour"] for c in spec["classes"]], dtype=np.uint8).reshape(-1, 3)
        dataset = spec["name"]
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{data_dir / 'spec.json'}: needs 'name' and 'classes' [{{name, colour}}]; "
                        "run `dvc repro prepare` again") from None
    evals = {}
    for model in list(cfg.members) + list(cfg.strategies):
        ensemble = model not in cfg.members
        evals[model] = [_load_record(runs_dir / f"seed{seed}" / "evaluate" / f"{model}.json", classes, ensemble)
                        for seed in cfg.seeds]
    study = Study(cfg, data_dir, runs_dir, dataset, classes, colours, evals)
    for path, stage in study.inputs():
        _require(path, stage)
    return study


def _load_record(path: Path, classes: list[str], ensemble: bool) -> dict:
    record = _read_json(path, "evaluate")
    keys = RECORD_KEYS + (("members",) if ensemble else ())
    missing = [key for key in keys if key not in record]
    missing += [f"params.{key}" for key in PARAM_KEYS if key not in record.get("params", {})]
    if missing:
        raise UserError(f"{path}: missing {', '.join(missing)}; run `dvc repro evaluate` again")
    if set(record["per_class_iou"]) != set(classes):
        raise UserError(f"{path}: per_class_iou names {sorted(record['per_class_iou'])} differ from spec.json's "
                        f"classes {classes}; run `dvc repro evaluate` again")
    return record


# ---- numbers -------------------------------------------------------------------------------------------------

def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (nan with fewer than two values)."""
    if not values:
        return math.nan, math.nan
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def _fmt(mean: float, std: float = math.nan, digits: int = 3) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _millions(count: int) -> str:
    return f"{count / 1e6:.2f}"


def _fmt_delta(delta: dict | None) -> str:
    return "—" if delta is None else f"{delta['delta']:+.3f} [{delta['low']:+.3f}, {delta['high']:+.3f}]"


def _delta(study: Study, a: str, b: str) -> dict:
    """mIoU(a) - mIoU(b) with its 95% interval, bootstrapped per seed and averaged over seeds."""
    per_seed = [bootstrap_delta(study.confusion(a, i), study.confusion(b, i), BOOTSTRAP_SAMPLES, seed=i)
                for i in range(len(study.seeds))]
    return {key: float(np.mean([d[key] for d in per_seed])) for key in ("delta", "low", "high")}


def _stat(row: dict, shown: dict, key: str, label: str, values: list[float], digits: int = 3) -> None:
    """Put a mean/std pair in the numeric row and its 'mean ± std' text in the shown row."""
    row[f"{key}_mean"], row[f"{key}_std"] = _mean_std(values)
    shown[label] = _fmt(row[f"{key}_mean"], row[f"{key}_std"], digits)


def _diverged(study: Study, model: str) -> tuple[int, int, int]:
    """(diverged, not recorded, runs) over seeds."""
    flags = [record["diverged"] for record in study.evals[model]]
    return sum(f is True for f in flags), sum(f is None for f in flags), len(flags)


# ---- tables --------------------------------------------------------------------------------------------------

def members_table(study: Study) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, shown_rows = [], []
    for model in study.members:
        first = study.evals[model][0]
        params = first["params"]
        row, shown = {"model": model}, {"member": model}
        _stat(row, shown, "miou", "mIoU", study.values(model, "miou"))
        _stat(row, shown, "pixel_accuracy", "pixel acc.", study.values(model, "pixel_accuracy"))
        _stat(row, shown, "mean_class_accuracy", "per-class acc.", study.values(model, "mean_class_accuracy"))
        row.update(params_generator=params["generator"], params_discriminator=params["discriminator"],
                   params_training=params["training"], flops_per_image=first["flops_per_image"])
        shown.update({"G params (M)": _millions(params["generator"]),
                      "D params (M)": _millions(params["discriminator"]),
                      "training params (M)": _millions(params["training"]),
                      "GFLOP / image": f"{first['flops_per_image'] / 1e9:.3f}"})
        _stat(row, shown, "train_seconds", "train s", study.values(model, "train_seconds"), digits=0)
        rows.append(row)
        shown_rows.append(shown)
    return pd.DataFrame(rows), pd.DataFrame(shown_rows)


def best_member(study: Study) -> str:
    return max(study.members, key=lambda m: _mean_std(study.values(m, "miou"))[0])


def ensembles_table(study: Study, best: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, shown_rows = [], []
    for strategy in study.strategies:
        first = study.evals[strategy][0]
        delta = _delta(study, strategy, best)
        row, shown = {"strategy": strategy, "members": " ".join(first["members"])}, \
            {"strategy": strategy, "members": ", ".join(first["members"])}
        _stat(row, shown, "miou", "mIoU", study.values(strategy, "miou"))
        row.update(best_member=best, delta_vs_best=delta["delta"], delta_low=delta["low"],
                   delta_high=delta["high"], params_inference=first["params"]["inference"])
        shown.update({f"Δ mIoU vs {best} [95% interval]": _fmt_delta(delta),
                      "inference params (M)": _millions(first["params"]["inference"])})
        rows.append(row)
        shown_rows.append(shown)
    return pd.DataFrame(rows), pd.DataFrame(shown_rows)


def hypothesis_rows(study: Study) -> list[dict]:
    """The numbers behind table 3 and the verdict, one dict per hypothesis strategy present."""
    rows = []
    for strategy in (s for s in HYPOTHESIS_ROLES if s in study.strategies):
        first = study.evals[strategy][0]
        diverged, unrecorded, runs = _diverged(study, strategy)
        compare = strategy != "learned" and "learned" in study.strategies
        miou_mean, miou_std = _mean_std(study.values(strategy, "miou"))
        rows.append({"strategy": strategy, "role": HYPOTHESIS_ROLES[strategy], "miou_mean": miou_mean,
                     "miou_std": miou_std, "delta": _delta(study, strategy, "learned") if compare else None,
                     "diverged": diverged, "unrecorded": unrecorded, "runs": runs,
                     "params_training": first["params"]["training"],
                     "params_inference": first["params"]["inference"],
                     "seconds_per_step": _mean_std(study.values(strategy, "seconds_per_step"))})
    return rows


def hypothesis_table(rows: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    numeric, shown = [], []
    for r in rows:
        delta = r["delta"] or {"delta": math.nan, "low": math.nan, "high": math.nan}
        numeric.append({"strategy": r["strategy"], "role": r["role"], "miou_mean": r["miou_mean"],
                        "miou_std": r["miou_std"], "delta_vs_learned": delta["delta"], "delta_low": delta["low"],
                        "delta_high": delta["high"], "diverged": r["diverged"], "diverged_unrecorded": r["unrecorded"],
                        "runs": r["runs"], "params_training": r["params_training"],
                        "params_inference": r["params_inference"], "seconds_per_step_mean": r["seconds_per_step"][0],
                        "seconds_per_step_std": r["seconds_per_step"][1]})
        unrecorded = f" ({r['unrecorded']} not recorded)" if r["unrecorded"] else ""
        shown.append({"strategy": r["strategy"], "training": r["role"], "mIoU": _fmt(r["miou_mean"], r["miou_std"]),
                      "Δ mIoU vs learned [95% interval]": _fmt_delta(r["delta"]),
                      "diverged": f"{r['diverged']}/{r['runs']}{unrecorded}",
                      "training params (M)": _millions(r["params_training"]),
                      "inference params (M)": _millions(r["params_inference"]),
                      "s / step": _fmt(*r["seconds_per_step"])})
    return pd.DataFrame(numeric), pd.DataFrame(shown)


def per_class_table(study: Study) -> tuple[pd.DataFrame, pd.DataFrame]:
    numeric, shown = [], []
    for model in study.models:
        means = {c: _mean_std([r["per_class_iou"][c] for r in study.evals[model]
                               if r["per_class_iou"][c] is not None])[0] for c in study.classes}
        numeric.append({"model": model, **means})
        shown.append({"model": model, **{c: _fmt(v) for c, v in means.items()}})
    return pd.DataFrame(numeric), pd.DataFrame(shown)


# ---- verdict -------------------------------------------------------------------------------------------------

def _delta_words(delta: dict) -> str:
    excludes = delta["low"] > 0 or delta["high"] < 0
    return (f"{delta['delta']:+.3f} mIoU (95% interval [{delta['low']:+.3f}, {delta['high']:+.3f}] "
            f"{'excludes' if excludes else 'includes'} 0)")


def _effect(delta: dict) -> str:
    if delta["low"] > 0:
        return "helps"
    if delta["high"] < 0:
        return "hurts"
    return "neither helps nor hurts measurably"


def end_to_end_sentence(rows: list[dict], subject: str = "pix2pix") -> str:
    """Whether `subject` can be trained end-to-end with the other networks, read off the `joint` row."""
    joint = next((r for r in rows if r["strategy"] == "joint"), None)
    if joint is None:
        return f"This study has no `joint` run, so it does not test whether {subject} can be trained end-to-end."
    k, unrecorded, n = joint["diverged"], joint["unrecorded"], joint["runs"]
    if k == n:
        return (f"No: {subject} could not be trained end-to-end with the other networks here "
                f"({n} of {n} `joint` runs diverged).")
    miou = _fmt(joint["miou_mean"], joint["miou_std"])
    delta = joint["delta"]
    versus = f"{_delta_words(delta)} vs frozen stacking" if delta else \
        "with no frozen-stacking (`learned`) run to compare against"
    if k == 0:
        how = "stably" if not unrecorded else "without a recorded divergence"
        runs = f"0 of {n} runs diverged" + (f", {unrecorded} not recorded" if unrecorded else "")
        sentence = (f"Yes: {subject} can be trained end-to-end with the other networks: `joint` trained {how} "
                    f"({runs}) and reached {miou} mIoU, {versus}")
    else:
        sentence = (f"Only unreliably: trained end-to-end with the other networks, {subject} diverged in {k} of {n} "
                    f"`joint` runs; averaged over all runs, diverged ones included, `joint` reached {miou} mIoU, "
                    f"{versus}")
    if delta:
        sentence += f", so end-to-end training {_effect(delta)}"
    return sentence + "."


def _gradient_ratio(history: pd.DataFrame, member: str) -> float:
    """grad_fusion / grad_own of the last epoch that measured them (they are measured on some steps only)."""
    last = history[[f"grad_fusion.{member}", f"grad_own.{member}"]].dropna().iloc[-1]
    return float(last.iloc[0] / last.iloc[1])


def gradient_sentence(study: Study) -> str:
    """How much of each member's training signal comes from the fusion loss in the end-to-end runs: the
    ratio of the gradient norms reaching the member's output (history.csv), mean over seeds."""
    parts = []
    for strategy in (s for s in JOINT if s in study.strategies):
        histories = [study.history(strategy, seed) for seed in study.seeds]
        ratios = [f"{member} {np.mean([_gradient_ratio(h, member) for h in histories]):.2f}"
                  for member in study.members if f"grad_own.{member}" in histories[0]]
        if ratios:
            parts.append(f"`{strategy}`: {', '.join(ratios)}")
    if not parts:
        return ""
    return ("Gradient reaching each member's output from the fusion loss, relative to the member's own loss "
            f"(last epoch): {'; '.join(parts)}. Near 0, the ensemble barely trains that member; above 1, it "
            "trains it more than the member's own objective does.")


def discriminator_sentence(study: Study, rows: list[dict]) -> str:
    """Whether keeping the discriminator in the end-to-end loop matters: `joint` vs `joint-no-d`."""
    by_name = {r["strategy"]: r for r in rows}
    absent = [s for s in JOINT if s not in by_name]
    if absent:
        return f"Whether the discriminator matters is not tested here (no `{absent[0]}` run)."
    delta = _delta(study, "joint", "joint-no-d")
    effect = {"helps": "The discriminator helps", "hurts": "The discriminator hurts",
              "neither helps nor hurts measurably": "The discriminator makes no measurable difference"}[_effect(delta)]
    sentence = f"{effect}: `joint` vs `joint-no-d` is {_delta_words(delta)}"
    with_d, without_d = by_name["joint"], by_name["joint-no-d"]
    if with_d["diverged"] != without_d["diverged"]:
        sentence += (f"; {with_d['diverged']} of {with_d['runs']} runs diverged with it and "
                     f"{without_d['diverged']} of {without_d['runs']} without")
    return sentence + "."


# ---- figures -------------------------------------------------------------------------------------------------

def _save(fig: Figure, path: Path) -> None:
    """Render with matplotlib's Agg canvas (Figure.savefig's default for PNG; no pyplot state)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _colourise(labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Class ids -> RGB by the dataset palette; void and unknown ids are black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:len(colours)] = colours
    return lut[labels]


def qualitative_figure(study: Study, path: Path) -> None:
    """A few test images: photo, truth, then every member's and strategy's prediction (first seed)."""
    preds = {m: np.load(study.pred_path(m), mmap_mode="r") for m in study.models}
    photos = np.load(study.data_dir / "test_photos.npy", mmap_mode="r")
    masks = np.load(study.data_dir / "test_masks.npy", mmap_mode="r")
    for model, pred in preds.items():
        if len(pred) != len(masks):
            raise UserError(f"{study.pred_path(model)}: {len(pred)} images but test_masks.npy has {len(masks)}; "
                            "run `dvc repro` to bring it up to date")
    h, w = next(iter(preds.values())).shape[1:]
    picks = np.unique(np.linspace(0, len(masks) - 1, min(QUALITATIVE_IMAGES, len(masks))).round().astype(int))
    columns = ["photo", "truth", *study.models]
    fig = Figure(figsize=(1.6 * len(columns), 1.7 * len(picks)), layout="constrained")
    axes = fig.subplots(len(picks), len(columns), squeeze=False)
    for row, index in enumerate(picks):
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


def training_curves_figure(study: Study, path: Path) -> None:
    """One panel per member and end-to-end strategy: the minimised losses (left) and val mIoU (right), every seed.
    Diagnostics (D outputs, gradient norms, lr, seconds) stay in history.csv and MLflow."""
    models = study.trained
    ncols = min(3, len(models))
    fig = Figure(figsize=(4.5 * ncols, 3.2 * math.ceil(len(models) / ncols)), layout="constrained")
    axes = fig.subplots(math.ceil(len(models) / ncols), ncols, squeeze=False).ravel()
    for ax in axes[len(models):]:
        ax.set_visible(False)
    for ax, model in zip(axes, models):
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
    _save(fig, path)


# ---- the report ----------------------------------------------------------------------------------------------

def _write_table(out_dir: Path, name: str, numeric: pd.DataFrame, shown: pd.DataFrame) -> str:
    """CSV (exact numbers) and LaTeX (as shown) beside the markdown that goes into conclusion.md."""
    write_text(out_dir / f"{name}.csv", numeric.to_csv(index=False))
    latex = shown.to_latex(index=False, escape=True)
    for text, command in LATEX.items():
        latex = latex.replace(text, command)
    write_text(out_dir / f"{name}.tex", latex)
    return shown.to_markdown(index=False, disable_numparse=True)


HOW_TO_READ = """\
Every number is a mean over the seeds, with ± the standard deviation across seeds (ddof 1) where there \
is more than one. mIoU averages intersection-over-union over the classes present in the truth or the \
prediction; pixel acc. is the share of non-void pixels labelled right; per-class acc. averages each \
class's share of pixels labelled right (as torchmetrics computes them: a class only predicted counts 0). \
Δ is a paired mIoU difference on the same test images and its bracket a 95% bootstrap interval: an \
interval that excludes 0 is a difference this test set resolves, one that includes 0 is not. Training \
parameters count every network optimised (the discriminator included), inference parameters only what \
runs to produce a label map. A run counts as diverged when its training flagged it so."""


def write_report(cfg: Config, data_dir: Path, runs_dir: Path, out_dir: Path) -> Path:
    """Write conclusion.md with its tables (CSV, LaTeX) and figures (PNG) into out_dir; return its path."""
    study = load_study(cfg, Path(data_dir), Path(runs_dir))
    out_dir = Path(out_dir)
    best = best_member(study)
    rows = hypothesis_rows(study)
    subject = "pix2pix" if any(m.kind == "pix2pix" for m in cfg.members.values()) else "the members"
    per_class_numeric, per_class_shown = per_class_table(study)
    tables = {
        "members": _write_table(out_dir, "members", *members_table(study)),
        "ensembles": _write_table(out_dir, "ensembles", *ensembles_table(study, best)),
        "hypothesis": _write_table(out_dir, "hypothesis", *hypothesis_table(rows)),
        "per_class_iou": _write_table(out_dir, "per_class_iou", per_class_numeric, per_class_shown),
    }
    qualitative_figure(study, out_dir / "qualitative.png")
    per_class_figure(study, per_class_numeric, out_dir / "per_class_iou.png")
    training_curves_figure(study, out_dir / "training_curves.png")

    seeds = ", ".join(map(str, study.seeds))
    text = f"""# {cfg.name}: pix2pix as a semantic segmenter on {study.dataset}

Seeds: {seeds}, one run of every model per seed. Test images: {study.n_test}. Classes: {len(study.classes)}.

## 1. Members

{tables["members"]}

## 2. Ensembles

{tables["ensembles"]}

Δ is measured against the best member by mean mIoU ({best}). The 95% interval comes from {BOOTSTRAP_SAMPLES} \
bootstrap resamples of the test images (the same images for both models), done per seed; the table shows the \
mean over seeds of the difference and of the interval's low and high ends.

## 3. Can pix2pix be trained end-to-end with other networks?

{tables["hypothesis"] if rows else "No `learned`, `joint` or `joint-no-d` strategy in this study."}

{end_to_end_sentence(rows, subject)} {discriminator_sentence(study, rows)}

{gradient_sentence(study)}

## 4. Per-class IoU (mean over seeds)

{tables["per_class_iou"]}

## Figures

![Qualitative results, seed {study.seeds[0]}](qualitative.png)

![Per-class IoU](per_class_iou.png)

![Training curves](training_curves.png)

## How to read

{HOW_TO_READ}
"""
    path = out_dir / "conclusion.md"
    write_text(path, text)
    write_json(out_dir / "summary.json", headline_metrics(study, rows))
    return path


def headline_metrics(study: Study, rows: list[dict]) -> dict[str, float]:
    """Test mIoU of every model and the end-to-end deltas (means over seeds): the parent MLflow run's
    metrics, so DVC experiments compare side by side in MLflow."""
    metrics = {f"test_miou.{model}": _mean_std(study.values(model, "miou"))[0] for model in study.models}
    metrics |= {f"delta_vs_learned.{r['strategy']}": r["delta"]["delta"] for r in rows if r["delta"]}
    return metrics
