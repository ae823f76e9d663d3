"""Typed configuration: params.yaml plus an optional experiment delta, validated strictly.

Every tunable of the study lives in params.yaml (DVC tracks it); `experiments/*.yaml` hold only
what an experiment changes and are deep-merged on top. Unknown keys, wrong types and
out-of-range values are errors that name the file and key (see `load_config`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Literal, Union

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
    load_size: PositiveInt = 72  # pix2pix jitter: resize to load_size ...
    crop_size: PositiveInt = 64  # ... then random crop; evaluation resizes to crop_size
    flip: bool = True
    synthetic: SyntheticConfig = SyntheticConfig()

    @model_validator(mode="after")
    def _crop_fits(self):
        if self.crop_size > self.load_size:
            raise ValueError(f"crop_size {self.crop_size} is larger than load_size {self.load_size}; "
                             "set load_size >= crop_size")
        return self


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


class GeneratorConfig(Strict):
    """pix2pix generator (reference defaults: unet_256, ngf 64, BatchNorm, dropout 0.5)."""

    arch: Literal["unet", "resnet_9blocks"] = "unet"
    ngf: PositiveInt = 64
    num_downs: PositiveInt | None = None  # None: log2(crop_size), i.e. unet_256 at 256 px, unet_128 at 128 px
    norm: Literal["batch", "instance"] = "batch"
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.5
    dropout_at_test: bool = False  # the reference keeps dropout on at test time
    head: Literal["rgb", "onehot"] = "rgb"  # rgb: colour label map as in the paper; onehot: C softmax channels
    rgb_temperature: PositiveFloat = 0.05  # softmax over -squared colour distance / T gives class probabilities


class DiscriminatorConfig(Strict):
    """70x70 PatchGAN ('basic' = n_layers 3) conditioned on the photo."""

    ndf: PositiveInt = 64
    n_layers: PositiveInt = 3
    norm: Literal["batch", "instance"] = "batch"


class OptimizerConfig(Strict):
    lr: PositiveFloat = 2e-4
    beta1: Annotated[float, Field(ge=0, lt=1)] = 0.5
    beta2: Annotated[float, Field(ge=0, lt=1)] = 0.999


class Pix2PixConfig(Strict):
    kind: Literal["pix2pix"] = "pix2pix"
    generator: GeneratorConfig = GeneratorConfig()
    discriminator: DiscriminatorConfig = DiscriminatorConfig()
    gan_mode: Literal["vanilla", "lsgan"] = "vanilla"
    lambda_l1: Annotated[float, Field(ge=0)] = 100.0
    optimizer: OptimizerConfig = OptimizerConfig()


class UnetL1Config(Strict):
    kind: Literal["unet_l1"] = "unet_l1"
    generator: GeneratorConfig = GeneratorConfig()
    optimizer: OptimizerConfig = OptimizerConfig()


class UnetCEConfig(Strict):
    kind: Literal["unet_ce"] = "unet_ce"
    encoder: str = "resnet34"
    encoder_weights: str | None = None  # nothing is downloaded unless a user sets e.g. "imagenet"
    optimizer: OptimizerConfig = OptimizerConfig(lr=1e-3, beta1=0.9)


MEMBER_KINDS = ("pix2pix", "unet_l1", "unet_ce")
MemberConfig = Annotated[Union[Pix2PixConfig, UnetL1Config, UnetCEConfig], Field(discriminator="kind")]


class MlflowConfig(Strict):
    experiment: str = "seg_p2p"


class Config(Strict):
    name: str = "synthetic-cpu"  # experiment name: reports/<name>/ and the MLflow parent run
    seeds: list[Annotated[int, Field(ge=0, lt=2**32)]] = [0]
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    members: dict[str, MemberConfig] = {"pix2pix": Pix2PixConfig(), "unet_l1": UnetL1Config(),
                                        "unet_ce": UnetCEConfig()}
    strategies: list[str] = ["max", "min", "mean", "vote", "learned", "joint", "joint-no-d"]
    mlflow: MlflowConfig = MlflowConfig()

    @model_validator(mode="after")
    def _non_empty(self):
        if not self.seeds:
            raise ValueError("seeds is empty; list at least one seed")
        if not self.members:
            raise ValueError("members is empty; define at least one member")
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
    error = exc.errors()[0]
    loc = list(error["loc"])
    if loc[:1] == ["members"] and len(loc) > 2 and loc[2] in MEMBER_KINDS:
        del loc[2]  # pydantic puts the union's tag in the path; the user never wrote it
    key = ".".join(str(part) for part in loc) or "(top level)"
    kind, value = error["type"], error.get("input")
    if kind == "extra_forbidden":
        return f"{source}: unknown key '{key}'; remove it or fix its spelling (see params.yaml for the valid keys)"
    if kind == "union_tag_invalid":
        return (f"{source}: {key}.kind: '{error['ctx']['tag']}' is not a member kind; "
                f"use one of {', '.join(MEMBER_KINDS)}")
    if kind == "union_tag_not_found":
        return f"{source}: {key}: no 'kind'; set kind: to one of {', '.join(MEMBER_KINDS)}"
    if kind == "value_error":  # our own validators: the message names the key and says what to do
        return f"{source}: {f'{key}: ' if loc else ''}{error['msg'].removeprefix('Value error, ')}"
    got = "" if isinstance(value, (dict, list)) else f" (got {value!r:.60})"
    hint = ""
    if isinstance(value, str) and kind in ("float_type", "int_type"):
        try:
            float(value)
            hint = (" (YAML reads 1e-3 as text: write 1.0e-3)" if "e" in value.lower() else
                    " (a quoted number is text: remove the quotes)")
        except ValueError:
            pass
    return f"{source}: {key}: {error['msg']}{got}{hint}; fix this value"


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
