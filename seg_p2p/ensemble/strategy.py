"""A strategy is a small YAML file in ensembles/: a combiner kind, its members and the kind's settings.

Combiner kinds are registered (`register_combiner`); every stage asks a strategy's kind how it runs, what it
costs and which rows and curves of the report it feeds, never its file name. A kind is fixed (over the
members' stored probabilities), fitted on stored validation probabilities, or trained end-to-end with the
members; see combiners.py and trained.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError, field_validator

from seg_p2p.config import Config, first_repeat, known_strategies
from seg_p2p.errors import UserError
from seg_p2p.run_paths import checkpoint
from seg_p2p.models import PARAMETER_ROLES
from seg_p2p.probabilities import StoredProbabilities, probability_files
from seg_p2p.settings import Strict, deep_merge, plain_name_problem, read_yaml, validation_message
from seg_p2p.stored import rerun
from seg_p2p.tracking import Tracker, flatten

if TYPE_CHECKING:  # the plugin boundary's types, named without importing torch and the data package at start-up
    import torch

    from seg_p2p.data.prepare import PreparedData
    from seg_p2p.data.spec import DatasetSpec
    from seg_p2p.inference import Inference


class StrategyConfig(Strict):
    """What every strategy file holds; a kind with settings of its own extends it."""

    combiner: str
    members: list[str] | None = None  # None: every member of params.yaml
    description: str = ""

    @field_validator("members")
    @classmethod
    def _each_once(cls, members):
        if members is not None and (twice := first_repeat(members)) is not None:
            raise ValueError(f"'{twice}' is listed twice; list each member once")
        return members


@dataclass
class StrategyRun:
    """One strategy for one seed: where the members' outputs are and where it writes."""

    cfg: Config
    strategy: StrategyConfig
    name: str
    seed: int
    data: PreparedData
    runs_dir: Path  # runs/seed{K}/members
    out_dir: Path  # runs/seed{K}/ensembles/{name}

    def tracker(self, defer: bool = False) -> Tracker:
        """The strategy's nested MLflow run, `ensemble/NAME` (its test scores go to `evaluate/NAME`); `defer`: a
        training opens it once it knows from its checkpoint which run it continues (engine.fit)."""
        tags = {"stage": "ensemble", "strategy": self.name, "seed": str(self.seed),
                "combiner": self.strategy.combiner}
        params = flatten({"strategy": self.strategy.model_dump(), "train": self.cfg.train.model_dump(),
                          "seed": self.seed})
        return Tracker(self.cfg, f"ensemble/{self.name}", tags, params, defer)


@dataclass
class SegmentRequest:
    """`seg-p2p segment` with a strategy: where its weights and its members' are, and how photos are labelled."""

    cfg: Config
    strategy: StrategyConfig
    spec: DatasetSpec
    strategy_dir: Path  # runs/seed{K}/ensembles/{name}
    members_dir: Path  # runs/seed{K}/members
    device: torch.device
    inference: Inference

    def members(self) -> list:
        """The strategy's trained members (their best checkpoints), ready to predict."""
        from seg_p2p.predict import load_member

        return [load_member(self.cfg, m, self.spec, weights_path(self.members_dir, m), self.device)
                for m in self.strategy.members]


@dataclass
class CostInputs:
    """What evaluate gives a kind to measure its cost: eval photos and the members' own measured entries."""

    cfg: Config
    strategy: StrategyConfig
    spec: DatasetSpec
    example: torch.Tensor  # a few test photos (N, 3, H, W)
    members: dict[str, dict]  # member name -> evaluate entry (params by role, flops_per_image, ms per image)


class CombinerKind:
    """How a kind runs (`run` writes {out}/predict/ like a member), what it costs, and where the report shows it."""

    settings: type[StrategyConfig] = StrategyConfig
    trained = False  # writes train/summary.json: its training time and divergence are recorded
    scores_members_inside = False  # writes each member's own test predictions as it trained them (run_paths.inside)
    fits_on_val = False  # fitted on the val split, so its val score is in-sample and cannot pick it as the best

    def run(self, job: StrategyRun) -> None:
        raise NotImplementedError

    def reads_members(self, strategy: StrategyConfig) -> bool:
        """Whether it reads the trained members' outputs (runs/seed{K}/members): a strategy that does not can run
        as soon as the data are prepared (`cluster run` submits it beside the members' trainings)."""
        return True

    def check(self, strategy: StrategyConfig, cfg: Config) -> None:
        """Refuse (ValueError: 'key: what is wrong; what to do') what only the study's settings show is impossible,
        when the strategy is loaded, before any stage runs."""

    def cost(self, inputs: CostInputs) -> dict:
        """{"params": by role, "flops_per_image": int, "inference_ms_per_image": float}."""
        raise NotImplementedError

    def photo_predictor(self, job: SegmentRequest):
        """For `seg-p2p segment`: a function of a photo (1, 3, H, W) in the inference mode's geometry giving its
        (1, C, H, W) probabilities, computed as the pipeline computes this strategy's test predictions."""
        raise NotImplementedError

    def plan(self, strategy: StrategyConfig, estimator):
        """What running the strategy costs, before it runs (`seg-p2p plan`): the seg_p2p.plan.estimate.Estimator part
        of this kind (a StagePlan: steps, FLOPs, disk, memory)."""
        raise NotImplementedError

    def report_fields(self, strategy: StrategyConfig) -> dict:
        """`curves`: the report plots its training history; `hypothesis`: its row in the end-to-end table
        (label, role: stacking | control | end_to_end, discriminator, beta, init, balance) or None."""
        return {"curves": False, "hypothesis": None}


COMBINERS: dict[str, CombinerKind] = {}


def register_combiner(name: str, kind: CombinerKind) -> None:
    """Make `combiner: NAME` usable in a strategy file."""
    if name in COMBINERS:
        raise ValueError(f"combiner kind '{name}' is already registered")
    COMBINERS[name] = kind


def combiner_kind(strategy: StrategyConfig) -> CombinerKind:
    return COMBINERS[strategy.combiner]


def strategy_file(folder: Path, name: str, chain: tuple[str, ...] = ()) -> dict:
    """A strategy file's settings with its `base:` resolved: the base strategy's settings (its own base first), the
    file's keys laid over them, so a variant holds only what it changes (as an experiment holds only its delta)."""
    path = folder / f"{name}.yaml"
    raw = read_yaml(path)
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str) or plain_name_problem(base) is not None or not (folder / f"{base}.yaml").is_file():
        raise UserError(f"{path}: base: {base!r} is not a strategy of {folder} (known: {known_strategies(folder)}); "
                        "fix the name")
    if base in (*chain, name):
        raise UserError(f"{path}: base: '{base}' leads back to itself ({' -> '.join((*chain, name, base))}); "
                        "end the chain at a file without base:")
    return deep_merge(strategy_file(folder, base, (*chain, name)), raw)


def load_strategy(cfg: Config, name: str, folder: Path) -> StrategyConfig:
    if (problem := plain_name_problem(name)) is not None:  # a --strategy or --model name: it becomes its out folder
        raise UserError(f"strategy {problem}; name a file of {folder} (known: {known_strategies(folder)})")
    path = folder / f"{name}.yaml"
    if not path.exists():
        raise UserError(f"{path}: no such strategy (known: {known_strategies(folder)}); add the file or fix the "
                        "name in strategies:")
    raw = deep_merge(strategy_file(folder, name), cfg.strategy_settings.get(name, {}))  # an experiment's changes
    if name in cfg.strategy_settings:
        path = Path(f"{path} (with strategy_settings.{name})")
    if raw.get("combiner") not in COMBINERS:
        got = f"'{raw['combiner']}' is not a combiner kind" if "combiner" in raw else "missing"
        raise UserError(f"{path}: combiner: {got}; use one of {', '.join(COMBINERS)}")
    try:
        strategy = COMBINERS[raw["combiner"]].settings.model_validate(raw)
    except ValidationError as exc:
        raise UserError(validation_message(str(path), exc)) from None
    members = list(cfg.members) if strategy.members is None else strategy.members
    missing = [m for m in members if m not in cfg.members]
    if missing or not members:
        raise UserError(f"{path}: members: '{missing[0] if missing else '(empty)'}' is not a member defined "
                        f"in params.yaml (defined: {', '.join(cfg.members)}); fix the list")
    if name in cfg.members:
        raise UserError(f"{path}: strategy name '{name}' is also a member name; rename the file")
    try:
        COMBINERS[strategy.combiner].check(strategy, cfg)
    except ValueError as exc:
        raise UserError(f"{path}: {exc}") from None
    return strategy.model_copy(update={"members": members})


def check_strategies(cfg: Config, folder: Path) -> None:
    """Every strategy of the study is valid, before any stage runs (load_config found their files)."""
    for name in cfg.strategies:
        load_strategy(cfg, name, folder)


def training_budgets(cfg: Config, folder: Path) -> dict[str, dict[str, int]]:
    """The epochs each strategy of the study that trains will run (its file, the experiment's strategy_settings,
    else the members' own)."""
    budgets = {}
    for name in cfg.strategies:
        strategy = load_strategy(cfg, name, folder)
        if hasattr(strategy, "training"):
            settings = strategy.training(cfg.train)
            budgets[name] = {"n_epochs": settings.n_epochs, "n_epochs_decay": settings.n_epochs_decay}
    return budgets


def weights_path(runs_dir: Path, member: str) -> Path:
    return checkpoint(runs_dir / member / "train")


def member_probs(runs_dir: Path, members: list[str], split: str, num_classes: int) -> list[StoredProbabilities]:
    """The members' stored probabilities of a split, memory-mapped; a missing or damaged one names the stage to run."""
    return [StoredProbabilities(runs_dir / member / "predict", split, num_classes, rerun("predict"))
            for member in members]


def member_probability_files(runs_dir: Path, members: list[str], split: str) -> list[Path]:
    """Every file of the members' stored probabilities of a split (a run's identity hashes them)."""
    return [path for member in members for path in probability_files(runs_dir / member / "predict", split)
            if path.exists()]


def members_cost(inputs: CostInputs) -> dict:
    """Running every member: their parameters by role, FLOPs and time added up."""
    parts = [inputs.members[m] for m in inputs.strategy.members]
    return {"params": {role: sum(p["params"].get(role, 0) for p in parts) for role in PARAMETER_ROLES},
            "flops_per_image": sum(p["flops_per_image"] for p in parts),
            "inference_ms_per_image": sum(p["inference_ms_per_image"] for p in parts)}
