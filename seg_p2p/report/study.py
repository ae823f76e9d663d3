"""The study as files on disk: every input of the report, checked before any number is computed.

The report reads only what the pipeline wrote, so a missing or stale file is the user's to fix by
rerunning a stage; each check names the file and that stage. What a model is (trained with curves, its
role in the question: stacking, control, end-to-end) comes from its evaluate record, never from its file
name, so a new strategy file takes its place in the report without a change here. The budget-matched reference
(params.yaml's `reference:`, seg_p2p.budget) is read as a member is, from its own folder, and is never one of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from seg_p2p.config import Config
from seg_p2p.data.spec import prepared_spec
from seg_p2p.errors import UserError
from seg_p2p.run_paths import REFERENCE, inside, model_dir
from seg_p2p.ragged import RaggedArray
from seg_p2p.stored import load_npy, read_csv, read_json, rerun, retrain

RECORD_KEYS = ("kind", "miou", "pixel_accuracy", "mean_class_accuracy", "per_class_iou", "params", "flops_per_image",
               "train_seconds", "seconds_per_step", "diverged", "curves", "hypothesis")
PARAM_KEYS = ("generator", "discriminator", "training", "inference")
HYPOTHESIS_KEYS = ("label", "role", "discriminator", "beta", "init", "balance")
# Fields newer than some records, with what an older record means by leaving them out.
OPTIONAL_KEYS = {"val_miou": None, "val_in_sample": False, "budget": None}
BUDGET_KEYS = ("width", "inference_params", "ensemble_inference_params", "train_flops", "ensemble_train_flops",
               "epochs", "ensemble_epochs", "ensemble")
STAGES = {"member": ("train", "predict"), "reference": ("reference", "reference"),
          "ensemble": ("ensemble", "ensemble")}  # a record's kind -> the stages that train and predict it


def reference_names(cfg: Config) -> list[str]:
    """The budget-matched network of `reference:`, where the study has one."""
    return [REFERENCE] if cfg.reference is not None else []


def trained_alone(cfg: Config) -> list[str]:
    """The models trained on their own: the members, then the reference."""
    return list(cfg.members) + reference_names(cfg)


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
    _tallies: dict = field(default_factory=dict, repr=False)
    _histories: dict = field(default_factory=dict, repr=False)

    @property
    def seeds(self) -> list[int]:
        return list(self.cfg.seeds)

    @property
    def members(self) -> list[str]:
        """The ensemble's members: never the reference, so no comparison among members can pick it."""
        return list(self.cfg.members)

    @property
    def references(self) -> list[str]:
        """The budget-matched network, where the study has one: trained like a member, combined by no strategy."""
        return reference_names(self.cfg)

    @property
    def strategies(self) -> list[str]:
        return list(self.cfg.strategies)

    @property
    def models(self) -> list[str]:
        return self.members + self.references + self.strategies

    def curves(self, model: str) -> bool:
        """Whether the model trained with its own history.csv (members, end-to-end strategies)."""
        return bool(self.evals[model][0]["curves"])

    def hypothesis(self, model: str) -> dict | None:
        """The model's role in the end-to-end question, or None when it plays none."""
        return self.evals[model][0]["hypothesis"]

    @property
    def trained(self) -> list[str]:
        """Models with a training history, in the order of cfg: members, then strategies."""
        return [m for m in self.models if self.curves(m)]

    def tallies_path(self, model: str, seed: int) -> Path:
        return self.runs_dir / f"seed{seed}" / "evaluate" / f"{model}_test_tallies.npy"

    def pred_path(self, model: str) -> Path:
        """Test predictions of the first seed (the ragged array's data file): the qualitative grid shows one run."""
        return model_dir(self.runs_dir / f"seed{self.seeds[0]}", model, self.cfg.members) / "predict" / "test_pred.npy"

    def history_path(self, model: str, seed: int) -> Path:
        return model_dir(self.runs_dir / f"seed{seed}", model, self.cfg.members) / "train" / "history.csv"

    def training_stage(self, model: str) -> str:
        """The stage that trains a model."""
        return STAGES[self.evals[model][0]["kind"]][0]

    def pred_fix(self, model: str) -> str:
        return rerun(STAGES[self.evals[model][0]["kind"]][1])

    def check_inputs(self) -> None:
        """Check every file read after the evaluate records (predictions and photos: their headers and sizes;
        tallies and histories: read, as the tables read them all), so a missing or damaged one stops the report
        before its first output is written."""
        for part in ("photos", "masks"):
            RaggedArray(self.data_dir / f"test_{part}", rerun("prepare"))
        for model in self.models:
            RaggedArray(self.pred_path(model).with_suffix(""), self.pred_fix(model))
        inside_models = [inside(s, m) for s in self.strategies if self.evals[s][0].get("members_inside") is not None
                         for m in self.evals[s][0]["members"]]
        for index, seed in enumerate(self.seeds):
            for model in self.models + inside_models:
                self.tallies(model, index)
            for model in self.trained:
                self.history(model, seed)

    def history(self, model: str, seed: int) -> pd.DataFrame:
        """A trained model's per-epoch history.csv, read once (the curves and the gradient sentence use it)."""
        key = (model, seed)
        if key not in self._histories:
            path = self.history_path(model, seed)
            history = read_csv(path, retrain(self.training_stage(model)))
            if "epoch" not in history:
                raise UserError(f"{path}: no 'epoch' column; {retrain(self.training_stage(model))}")
            self._histories[key] = history
        return self._histories[key]

    def tallies(self, model: str, index: int) -> np.ndarray:
        """Per-image test class tallies (N,3,C) of one model for the seed at `index` in cfg.seeds."""
        key = (model, index)
        if key not in self._tallies:
            path = self.tallies_path(model, self.seeds[index])
            tallies = load_npy(path, rerun("evaluate"))
            expected = (self.n_test, 3, len(self.classes))
            if tallies.shape != expected:
                raise UserError(f"{path}: shape {tallies.shape}, expected {expected} (test images, tallies, "
                                f"classes); {rerun('evaluate')}")
            self._tallies[key] = tallies
        return self._tallies[key]

    @cached_property
    def n_test(self) -> int:
        return len(read_json(self.data_dir / "test_names.json", rerun("prepare"), list))

    def values(self, model: str, key: str) -> list[float]:
        """One record field across seeds, nulls dropped."""
        return [record[key] for record in self.evals[model] if record[key] is not None]

    def budget(self, model: str) -> dict | None:
        """A reference network's budget beside its ensemble's (parameters, training FLOPs, epochs); None otherwise."""
        return self.evals[model][0]["budget"]


def load_study(cfg: Config, data_dir: Path, runs_dir: Path) -> Study:
    """Read the spec and every evaluate record, and check every other input before any is used."""
    spec = prepared_spec(data_dir)
    classes, colours, dataset = spec.names, spec.palette, spec.name
    evals = {}
    for model in trained_alone(cfg) + list(cfg.strategies):
        ensemble = model in cfg.strategies
        evals[model] = [_load_record(runs_dir / f"seed{seed}" / "evaluate" / f"{model}.json", classes, ensemble)
                        for seed in cfg.seeds]
    study = Study(cfg, data_dir, runs_dir, dataset, classes, colours, evals)
    study.check_inputs()
    return study


def _load_record(path: Path, classes: list[str], ensemble: bool) -> dict:
    record = read_json(path, rerun("evaluate"))
    keys = RECORD_KEYS + (("members",) if ensemble else ())
    missing = [key for key in keys if key not in record]
    missing += [f"params.{key}" for key in PARAM_KEYS if key not in record.get("params", {})]
    if missing:
        raise UserError(f"{path}: missing {', '.join(missing)}; {rerun('evaluate')}")
    hypothesis = record["hypothesis"]
    if hypothesis is not None and not (isinstance(hypothesis, dict) and all(k in hypothesis for k in HYPOTHESIS_KEYS)):
        raise UserError(f"{path}: 'hypothesis' must be null or have {', '.join(HYPOTHESIS_KEYS)}; "
                        f"{rerun('evaluate')}")
    if set(record["per_class_iou"]) != set(classes):
        raise UserError(f"{path}: per_class_iou names {sorted(record['per_class_iou'])} differ from spec.json's "
                        f"classes {classes}; {rerun('evaluate')}")
    if record["kind"] not in STAGES:
        raise UserError(f"{path}: kind '{record['kind']}' is none of {', '.join(STAGES)}; {rerun('evaluate')}")
    record = OPTIONAL_KEYS | record
    budget = record["budget"]
    if record["kind"] == "reference" and not (isinstance(budget, dict) and all(key in budget for key in BUDGET_KEYS)):
        raise UserError(f"{path}: a reference network's 'budget' must have {', '.join(BUDGET_KEYS)}; "
                        f"{rerun('evaluate')}")
    return record
