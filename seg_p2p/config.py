"""Typed configuration: params.yaml plus an optional experiment delta, validated strictly.

Every tunable of the study lives in params.yaml (DVC tracks it); `experiments/*.yaml` hold only
what an experiment changes and are deep-merged on top. Unknown keys, wrong types and
out-of-range values are errors that name the file and key (see `load_config`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, model_validator

from seg_p2p.errors import UserError


class Strict(BaseModel):
    """Base for every config section: unknown keys and silent type coercion are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class SyntheticConfig(Strict):
    """The embedded scene generator (seg_p2p.data.synthetic)."""

    size: Annotated[int, Field(ge=32, le=512)] = 64
    num_train: PositiveInt = 240
    num_val: PositiveInt = 48
    num_test: PositiveInt = 48
    seed: int = 0


class DataConfig(Strict):
    dataset: str = "synthetic"  # synthetic, a built-in spec (facades, camvid, cityscapes) or a spec YAML path
    root: str | None = None  # folder of the raw dataset; unused for synthetic
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.1  # carved from train when there is no val split
    load_size: PositiveInt = 72  # resize mode's pix2pix jitter: resize to load_size ...
    crop_size: PositiveInt = 64  # ... then random crop; the model's input size (resize mode: the evaluation size)
    scale_range: Annotated[list[PositiveFloat], Field(min_length=2, max_length=2)] = [0.5, 2.0]  # slide mode: random rescale before the crop
    flip: bool = True
    synthetic: SyntheticConfig = SyntheticConfig()

    @model_validator(mode="after")
    def _crop_fits(self):
        if self.crop_size > self.load_size:
            raise ValueError(f"crop_size {self.crop_size} is larger than load_size {self.load_size}; "
                             "set load_size >= crop_size")
        if self.scale_range[0] > self.scale_range[1]:
            raise ValueError(f"scale_range {self.scale_range} runs backwards; give [low, high] with low <= high")
        return self


class InferenceConfig(Strict):
    """How a trained model labels a photo, in validation, test and `seg-p2p segment` (seg_p2p/inference.py).

    resize: the photo resized to crop_size, labels compared at that size (the pix2pix protocol; training jitters
    by resize then crop). slide: crop_size windows over the photo at its native size, probabilities averaged where
    windows overlap, labels compared at their native size (mmsegmentation's slide mode; training takes random
    crops of the photo at a random rescale of its native size, so the model sees the scale it is applied at)."""

    mode: Literal["resize", "slide"] = "resize"
    overlap: Annotated[int, Field(ge=0)] = 0  # slide: pixels shared by neighbouring windows (< crop_size)
    pad: Literal["constant", "none"] = "constant"  # slide: a photo smaller than a window is padded, or refused
    flip_tta: bool = False  # also run the mirrored photo and average the probabilities
    max_stored_side: PositiveInt = 512  # stored probabilities: longer side at most this (predictions: full size)


class TrainConfig(Strict):
    batch_size: PositiveInt = 1
    n_epochs: Annotated[int, Field(ge=0)] = 100  # constant learning rate ...
    n_epochs_decay: Annotated[int, Field(ge=0)] = 100  # ... then linear to zero (pix2pix schedule)
    val_every: PositiveInt = 1
    sample_every: PositiveInt = 5  # epochs between prediction grids logged to MLflow
    num_workers: Annotated[int, Field(ge=0)] = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False
    compile: bool = False
    deterministic: bool = True
    sync_batchnorm: bool = False  # multi-GPU (torchrun): BatchNorm statistics over the global batch
    collapse_patience: PositiveInt = 200  # steps of discriminator loss < 1e-3 before a collapse is flagged

    @model_validator(mode="after")
    def _some_epochs(self):
        if self.n_epochs + self.n_epochs_decay == 0:
            raise ValueError("n_epochs + n_epochs_decay is 0; train for at least one epoch")
        return self


class OptimizerConfig(Strict):
    lr: PositiveFloat = 2e-4
    beta1: Annotated[float, Field(ge=0, lt=1)] = 0.5
    beta2: Annotated[float, Field(ge=0, lt=1)] = 0.999


class MemberSettings(Strict):
    """Base of every member kind's settings (seg_p2p/models): `kind` names the registered kind."""

    kind: str
    optimizer: OptimizerConfig = OptimizerConfig()


def default_members() -> dict[str, MemberSettings]:
    """One member of each registered kind with its default settings, named after the kind."""
    from seg_p2p.models import MEMBER_KINDS

    return {kind: member.config() for kind, member in MEMBER_KINDS.items()}


class MlflowConfig(Strict):
    experiment: str = "seg_p2p"


class Config(Strict):
    name: str = "synthetic-cpu"  # experiment name: reports/<name>/ and the MLflow parent run
    seeds: list[Annotated[int, Field(ge=0, lt=2**32)]] = [0]
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    inference: InferenceConfig = InferenceConfig()
    members: dict[str, MemberSettings] = Field(default_factory=default_members)
    strategies: list[str] = []  # files of ensembles/ (params.yaml lists the study's)
    mlflow: MlflowConfig = MlflowConfig()

    @model_validator(mode="before")
    @classmethod
    def _members_by_kind(cls, data):
        """Validate each member with its kind's settings class (the registry decides, so kinds added
        later need no change here)."""
        if isinstance(data, dict) and isinstance(data.get("members"), dict):
            from seg_p2p.models import member_settings

            data = {**data, "members": {name: member_settings(name, raw) for name, raw in data["members"].items()}}
        return data

    @model_validator(mode="after")
    def _non_empty(self):
        if not self.seeds:
            raise ValueError("seeds is empty; list at least one seed")
        if not self.members:
            raise ValueError("members is empty; define at least one member")
        if self.inference.overlap >= self.data.crop_size:
            raise ValueError(f"inference.overlap: {self.inference.overlap} px is not smaller than the window "
                             f"(data.crop_size {self.data.crop_size}); use 0 to {self.data.crop_size - 1}")
        return self


def deep_merge(base: dict, delta: dict) -> dict:
    """Return base with delta laid over it; nested dicts merge, everything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in delta.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: file not found; check the path") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file; point at a YAML file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror or exc}); point at a readable YAML file") from None
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise UserError(f"{path}: not valid YAML{where}; fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys at the top level; see params.yaml for the layout")
    return data


def validation_message(source: str, exc: ValidationError) -> str:
    """One line naming the first bad key and what is wrong with it."""
    return f"{source}: {error_text(exc.errors()[0])}"


def error_text(error: dict, prefix: tuple = ()) -> str:
    """A pydantic error as 'key: what is wrong; what to do'; `prefix` is where the validated mapping sits."""
    loc = [*prefix, *error["loc"]]
    key = ".".join(str(part) for part in loc) or "(top level)"
    kind, value = error["type"], error.get("input")
    if kind == "extra_forbidden":
        return f"unknown key '{key}'; remove it or fix its spelling (see params.yaml for the valid keys)"
    if kind == "value_error":  # our own validators: the message names the key and says what to do
        return f"{f'{key}: ' if loc else ''}{error['msg'].removeprefix('Value error, ')}"
    got = "" if isinstance(value, (dict, list)) else f" (got {value!r:.60})"
    hint = ""
    if isinstance(value, str) and kind in ("float_type", "int_type"):
        try:
            float(value)
            hint = (" (YAML reads 1e-3 as text: write 1.0e-3)" if "e" in value.lower() else
                    " (a quoted number is text: remove the quotes)")
        except ValueError:
            pass
    return f"{key}: {error['msg']}{got}{hint}; fix this value"


def load_config(params: str | Path = "params.yaml", experiment: str | Path | None = None,
                overrides: dict | None = None) -> Config:
    """Read params.yaml, lay an experiment file and then `overrides` over it, and validate."""
    raw = read_yaml(params) if Path(params).exists() else {}
    source = str(params)
    if experiment is not None:
        raw = deep_merge(raw, read_yaml(experiment))
        source = f"{experiment} (over {params})"
    if overrides:
        raw = deep_merge(raw, overrides)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise UserError(validation_message(source, exc)) from None
