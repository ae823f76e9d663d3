"""Typed configuration: params.yaml plus an optional experiment delta, validated strictly.

Every tunable of the study lives in params.yaml (DVC tracks it); `experiments/*.yaml` hold only
what an experiment changes and are deep-merged on top. Unknown keys, wrong types and
out-of-range values are errors that name the file and key (see `load_config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PositiveFloat, PositiveInt, ValidationError, field_validator, model_validator

from seg_p2p.data.settings import DataConfig
from seg_p2p.errors import UserError
from seg_p2p.run_paths import REFERENCE
from seg_p2p.settings import (SEEDS, MemberConfig, Strict, deep_merge, experiment_settings, plain_name_problem,
                              validation_message)


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
    stored_classes: PositiveInt = 12  # stored probabilities: every class up to this many, else the most probable


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
    processes: PositiveInt = 1  # data-parallel processes of one training (torchrun; on CUDA one GPU each)
    sync_batchnorm: bool = False  # several processes: BatchNorm statistics over the global batch
    collapse_patience: PositiveInt = 200  # steps of discriminator loss < 1e-3 before a collapse is flagged

    @model_validator(mode="after")
    def _some_epochs(self):
        if self.n_epochs + self.n_epochs_decay == 0:
            raise ValueError("n_epochs + n_epochs_decay is 0; train for at least one epoch")
        if self.sync_batchnorm and self.processes == 1:
            raise ValueError("sync_batchnorm: pools BatchNorm statistics over processes, and processes is 1; set "
                             "processes > 1 or sync_batchnorm: false")
        return self


def default_members() -> dict[str, MemberConfig]:
    """One member of each registered kind with its default settings, named after the kind."""
    from seg_p2p.models import MEMBER_KINDS

    return {kind: member.config() for kind, member in MEMBER_KINDS.items()}


class MlflowConfig(Strict):
    experiment: str = "seg_p2p"


class StageResources(Strict):
    """What one job of a stage asks the scheduler for (`seg-p2p cluster run`)."""

    cpus: PositiveInt = 2  # also the job's threads (OMP_NUM_THREADS = cpus / processes)
    gpus: Annotated[int, Field(ge=0, le=1)] = 0  # per process: a training runs train.processes processes
    mem_gb: PositiveFloat = 8.0
    time_min: PositiveInt = 60


class ClusterResources(Strict):
    """Resources per stage kind (the dvc.yaml stage a job runs: train@pix2pix-0 is a `train` job)."""

    code: StageResources = StageResources(cpus=1, mem_gb=1.0, time_min=10)
    prepare: StageResources = StageResources(cpus=4, mem_gb=16.0, time_min=240)
    train: StageResources = StageResources(cpus=8, gpus=1, mem_gb=32.0, time_min=1440)
    predict: StageResources = StageResources(cpus=8, gpus=1, mem_gb=32.0, time_min=240)
    ensemble: StageResources = StageResources(cpus=8, gpus=1, mem_gb=32.0, time_min=1440)
    reference: StageResources = StageResources(cpus=8, gpus=1, mem_gb=32.0, time_min=1440)
    evaluate: StageResources = StageResources(cpus=4, mem_gb=16.0, time_min=240)
    report: StageResources = StageResources(cpus=2, mem_gb=8.0, time_min=60)


GPU_STAGES = ("train", "predict", "ensemble", "reference")  # the stages whose models run on train.device
TRAINING_STAGES = ("train", "reference")  # the stages that train one model in train.processes processes
# sbatch options `cluster run` sets itself, from cluster.resources, the DAG and its job folder.
SBATCH_OWN = {"cpus-per-task", "gres", "gpus", "gpus-per-node", "mem", "time", "partition", "account",
              "dependency", "kill-on-invalid-dep", "job-name", "output", "error", "nodes", "ntasks-per-node"}


class ClusterConfig(Strict):
    """`seg-p2p cluster run`: every out-of-date DVC stage a job through an executor (README, "On a cluster")."""

    executor: str = "auto"  # auto (slurm where sbatch is found, else local), slurm, local or a registered executor
    folder: str = ".cluster"  # job scripts, logs and the submission record, on the filesystem the nodes share
    partition: str | None = None
    account: str | None = None
    setup: list[str] = []  # shell lines run before each job (module load ..., source .venv/bin/activate)
    sbatch: dict[str, str | int] = {}  # further sbatch options, passed through (qos, constraint, ...)
    poll_seconds: PositiveFloat = 10.0  # how often a waiting client asks the scheduler
    resources: ClusterResources = ClusterResources()

    @field_validator("sbatch")
    @classmethod
    def _not_our_own(cls, options):
        for key in options:
            if key.replace("_", "-") in SBATCH_OWN:
                raise ValueError(f"'{key}' is set by seg-p2p (from cluster.resources, partition, account and the "
                                 "DAG); remove it here")
        return options


class Config(Strict):
    name: str = "synthetic-cpu"  # experiment name: reports/<name>/ and the MLflow parent run
    seeds: list[Annotated[int, Field(ge=SEEDS.start, lt=SEEDS.stop)]] = [0]
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    inference: InferenceConfig = InferenceConfig()
    members: dict[str, MemberConfig] = Field(default_factory=default_members)
    reference: MemberConfig | None = None  # one network given the members' budget (seg_p2p.budget); None: none
    strategies: list[str] = []  # files of ensembles/ (params.yaml lists the study's)
    strategy_settings: dict[str, dict] = {}  # strategy name -> keys laid over its file (an experiment's budgets)
    gan_pairs: dict[str, str] = {}  # adversarial member -> the member it adds the GAN term to (the report's 2 x 2)
    mlflow: MlflowConfig = MlflowConfig()
    cluster: ClusterConfig = ClusterConfig()

    @model_validator(mode="before")
    @classmethod
    def _members_by_kind(cls, data):
        """Validate each member with its kind's settings class (the registry decides, so kinds added
        later need no change here)."""
        if isinstance(data, dict) and isinstance(data.get("members"), dict):
            from seg_p2p.models import member_settings

            data = {**data, "members": {name: member_settings(name, raw) for name, raw in data["members"].items()}}
        if isinstance(data, dict) and data.get("reference") is not None:
            from seg_p2p.models import member_settings

            data = {**data, "reference": member_settings("reference", data["reference"], key="reference")}
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
        for stage in GPU_STAGES:
            if getattr(self.cluster.resources, stage).gpus == 0 and self.train.device != "cpu":
                raise ValueError(f"cluster.resources.{stage}.gpus: 0 for a stage that runs on train.device "
                                 f"'{self.train.device}'; give it 1, or set train.device: cpu to run it on CPUs")
        return self

    @model_validator(mode="after")
    def _reference_can_be_matched(self):
        """The reference has a width to set, and its name is its own (runs/seed{K}/reference/, evaluate's records)."""
        if REFERENCE in self.members:
            raise ValueError(f"members.{REFERENCE}: the name of the budget-matched network (reference:); rename the "
                             "member")
        if self.reference is not None and "width" not in type(self.reference).model_fields:
            raise ValueError(f"reference.kind: '{self.reference.kind}' has no width to match the ensemble's "
                             "parameters; use a kind with one (unet_ce, unet_ce_adv) or set reference: null")
        return self

    @model_validator(mode="after")
    def _gan_pairs_are_members(self):
        """Each pair is an adversarial member and a member without a discriminator, both of the study."""
        for gan, plain in self.gan_pairs.items():
            for key, name, adversarial in ((f"gan_pairs.{gan}", gan, True), (f"gan_pairs.{gan}", plain, False)):
                if name not in self.members or hasattr(self.members[name], "discriminator") != adversarial:
                    raise ValueError(f"{key}: {name!r} is not a member {'with' if adversarial else 'without'} a "
                                     f"discriminator (members: {', '.join(self.members)}); fix the pair or remove it")
        return self

    @model_validator(mode="after")
    def _plain_names_and_sets(self):
        for key, name in self.path_names():
            if (problem := plain_name_problem(name)) is not None:
                raise ValueError(f"{key}: {problem}; rename it")
        for key, items in (("seeds", self.seeds), ("strategies", self.strategies)):
            if (twice := first_repeat(items)) is not None:
                raise ValueError(f"{key}: {twice!r} is listed twice; list each once")
        return self

    def path_names(self) -> list[tuple[str, str]]:
        """(key, name) of every name the pipeline makes a path of: reports/<name>/, runs/seed<K>/members/<member>/,
        ensembles/<strategy>.yaml and runs/seed<K>/ensembles/<strategy>/ (a new named setting belongs here)."""
        return [("name", self.name), *(("members", m) for m in self.members), *self.strategy_references()]

    def strategy_references(self) -> list[tuple[str, str]]:
        """(key, strategy name) of every place the config names a strategy, i.e. a file ensembles/<name>.yaml (a new
        mapping keyed by strategy names belongs here)."""
        return [*(("strategies", name) for name in self.strategies),
                *(("strategy_settings", name) for name in self.strategy_settings)]


def first_repeat(items: list):
    """The first item of `items` seen twice, or None."""
    seen = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    return None


def known_strategies(folder: Path) -> str:
    return ", ".join(sorted(p.stem for p in folder.glob("*.yaml"))) or "none"


def refuse_unknown_strategies(cfg: Config, folder: Path, source: str) -> None:
    """Every strategy the config names has its file in `folder`. Budgets for strategies that exist but are not run
    (strategy_settings beyond `strategies`) are allowed: a preset sets them for every experiment built on it."""
    for key, name in cfg.strategy_references():
        if not (folder / f"{name}.yaml").is_file():
            raise UserError(f"{source}: {key}: '{name}' has no {folder / f'{name}.yaml'} (known: "
                            f"{known_strategies(folder)}); fix the name or add the file")


def load_config(params: str | Path = "params.yaml", experiment: str | Path | None = None,
                overrides: dict | None = None, strategies_dir: str | Path = "ensembles") -> Config:
    """Read params.yaml, lay an experiment file (and its preset) and then `overrides` over it, and validate; every
    strategy it names must be a file of `strategies_dir` (the project's ensembles/, every command's --strategies-dir),
    so that all commands, not only those that run strategies, refuse a name that names nothing."""
    raw = experiment_settings(params, experiment)
    source = str(params) if experiment is None else f"{experiment} (over {params})"
    if overrides:
        raw = deep_merge(raw, overrides)
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        raise UserError(validation_message(source, exc)) from None
    refuse_unknown_strategies(cfg, Path(strategies_dir), source)
    return cfg
