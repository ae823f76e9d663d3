"""Combiners with weights: frozen stacking (a fusion net fitted on the members' stored val probabilities) and
joint (members and fusion net trained in one loop, discriminators in it): the study's question. A joint strategy
with beta = 0 is the compute-matched control of every joint strategy with the same init: the same loop, epochs and
batches, the fusion loss's gradient into the members stopped.

Both train with the one engine (engine.fit) and predict the test split like a member. A run whose loss turns
NaN/inf is a finding, not a crash: it is recorded as diverged and predicted from its last good checkpoint.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import torch
from pydantic import Field, PositiveFloat, ValidationError
from torch.utils.data import Dataset, Subset

from seg_p2p.atomic import write_json
from seg_p2p.checkpoint import load_weights
from seg_p2p.config import TrainConfig
from seg_p2p.device import select_device, training_device
from seg_p2p.engine import TrainingRun, TrainingDiverged, fit
from seg_p2p.ensemble.balance import BalanceMode
from seg_p2p.ensemble.fusion import FusionConfig, FusionNet, JointEnsemble, ProbabilityDataset, StackingModel
from seg_p2p.ensemble.strategy import (CombinerKind, CostInputs, SegmentRequest, StrategyConfig, StrategyRun,
                                       member_probability_files, member_probs, members_cost, register_combiner,
                                       weights_path)
from seg_p2p.errors import UserError
from seg_p2p.fingerprint import fingerprint
from seg_p2p.metrics import inference_cost
from seg_p2p.models import build_member, role_counts
from seg_p2p.models.member import SegModel
from seg_p2p.inference import Inference
from seg_p2p.run_paths import checkpoint, inside, inside_predict_dir
from seg_p2p.predict import SplitOutput, photo_predictor, predict_split
from seg_p2p.settings import error_text


class StackingConfig(StrategyConfig):
    fusion: FusionConfig = FusionConfig()
    n_epochs: Annotated[int, Field(ge=0)] | None = None  # override train.n_epochs ...
    n_epochs_decay: Annotated[int, Field(ge=0)] | None = None  # ... and train.n_epochs_decay

    def training(self, train: TrainConfig) -> TrainConfig:
        """The run's training settings: the study's, with this strategy's epochs where it sets them, validated as
        the study's own are (ValueError naming the key)."""
        epochs = {key: getattr(self, key) for key in ("n_epochs", "n_epochs_decay") if getattr(self, key) is not None}
        try:
            return TrainConfig.model_validate({**train.model_dump(), **epochs})
        except ValidationError as exc:
            raise ValueError(error_text(exc.errors()[0])) from None


class JointConfig(StackingConfig):
    discriminator: bool = True  # keep the members' discriminators in the loop
    init: Literal["scratch", "members"] = "scratch"  # from random weights, or fine-tune the trained members
    beta: Annotated[float, Field(ge=0, le=1)] = 0.5  # weight of the fusion loss in the members' gradient
    balance: BalanceMode = "normalise"  # how own and fusion losses are put on one scale (balance.py)
    balance_lr: PositiveFloat = 0.01  # Adam lr of `uncertainty`'s log-variances (they move by log loss ratios)


@dataclass
class TrainingSetup:
    """What a trained kind hands the engine: the model, its splits and the member files the run reads."""

    model: SegModel
    train: Dataset
    val: Dataset | None  # None: no validation
    test: Dataset
    inputs: list[Path] = field(default_factory=list)
    monitor: Dataset | None = None  # fixed training images scored every epoch (engine.TrainingRun.monitor)


class TrainedCombiner(CombinerKind):
    trained = True

    def setup(self, job: StrategyRun) -> TrainingSetup:
        raise NotImplementedError

    def check(self, strategy, cfg) -> None:
        strategy.training(cfg.train)

    def run(self, job: StrategyRun) -> None:
        cfg, strategy, spec = job.cfg, job.strategy, job.data.spec
        settings = strategy.training(cfg.train)
        training_device(settings)  # refuse what this device cannot run before any work
        setup = self.setup(job)
        model = setup.model
        identity = fingerprint(strategy.model_dump(), {m: cfg.members[m].model_dump() for m in strategy.members},
                               settings.model_dump(), cfg.data.model_dump(), cfg.inference.model_dump(), job.seed,
                               code=__name__,
                               inputs=job.data.files() + setup.inputs)
        out = job.out_dir / "train"
        inference = Inference.from_config(cfg)
        with job.tracker(defer=True) as tracker:
            try:
                fit(model, setup.train, setup.val, TrainingRun(settings, job.seed, out, tracker, identity, spec.palette,
                                                       spec.num_classes, self.photo_inference(inference),
                                                       setup.monitor))
            except TrainingDiverged as exc:
                if not checkpoint(out).exists():
                    raise UserError(f"{exc} (before any checkpoint: nothing to evaluate)") from None
                print(f"seg-p2p: warning: {exc}; predicting with {checkpoint(out)}", file=sys.stderr)
                write_json(out / "summary.json", {"diverged": True, "message": str(exc)})
                tracker.log_metrics({"diverged": 1.0})
            load_weights(model, checkpoint(out))
            self.write_predictions(job, setup, inference)

    def write_predictions(self, job: StrategyRun, setup: TrainingSetup, inference: Inference) -> None:
        """Test, then val (what the report picks the best ensemble by; test stays as it was before val was written),
        then each member as this run trained it, alone, through the member's own inference path (predict's): whether
        end-to-end training made it a better segmenter, or only a better complement."""
        device, classes, model = select_device(job.cfg.train.device), job.data.spec.num_classes, setup.model
        model.to(device)
        for split, dataset in (("test", setup.test), ("val", setup.val)):
            if dataset is not None:
                sizes = [inference.eval_size(size) for size in job.data.sizes(split)]
                predict_split(self.predictor(model, inference, job.data.names(split)), dataset, inference, device,
                              SplitOutput(job.out_dir / "predict", split, sizes, classes), job.name)
        names = job.data.names("test")
        eval_sizes = [inference.eval_size(size) for size in job.data.sizes("test")]
        if self.scores_members_inside:
            for name, member in model.members.items():
                torch.manual_seed(0)  # dropout_at_test draws from it, as in predict_member
                predict_split(photo_predictor(member, inference, names), setup.test, inference, device,
                              SplitOutput(inside_predict_dir(job.out_dir, name), "test", eval_sizes, classes),
                              inside(job.name, name))

    def photo_inference(self, inference: Inference) -> Inference | None:
        """How the engine labels val images: a kind whose model takes more than photos returns None."""
        return inference

    def predictor(self, model, inference: Inference, names: list[str]):
        return photo_predictor(model, inference, names)


def _dataset(job: StrategyRun, split: str, jitter: bool | None = None):
    """A split as members see it: the training jitter on train, the evaluation resize elsewhere."""
    from seg_p2p.data.dataset import SegmentationDataset
    from seg_p2p.data.transforms import build_transform

    train = split == "train" if jitter is None else jitter
    transform = build_transform(job.cfg.data, job.cfg.inference.mode, train=train)
    return SegmentationDataset(job.data, split, transform, job.seed)


class Stacking(TrainedCombiner):
    """Frozen stacking: the fusion net alone, fitted on the members' val probabilities (it never sees test,
    and val is its training data, so it has no validation)."""

    settings = StackingConfig
    fits_on_val = True

    def setup(self, job):
        members = job.strategy.members
        model = StackingModel(len(members), job.data.spec.num_classes, job.strategy.fusion)
        # Random crop_size crops of the val images batch whatever their size (slide mode); the test split runs whole.
        classes = job.data.spec.num_classes
        train_set = ProbabilityDataset(member_probs(job.runs_dir, members, "val", classes), _dataset(job, "val"),
                                       job.cfg.data.crop_size, job.seed)
        test_set = ProbabilityDataset(member_probs(job.runs_dir, members, "test", classes), _dataset(job, "test"))
        return TrainingSetup(model, train_set, None, test_set, member_probability_files(job.runs_dir, members, "val"))

    def photo_inference(self, inference):
        return None

    def plan(self, strategy, estimator):
        return estimator.stacking(strategy)

    def predictor(self, model, inference, names):
        """The fusion net over the members' stored probabilities, at their stored size (predict_split grows it)."""
        model.eval()
        return lambda batch: model.probabilities(model(batch))

    def cost(self, inputs: CostInputs) -> dict:
        cost = members_cost(inputs)
        probe = _FusionProbe(FusionNet(len(inputs.strategy.members), inputs.spec.num_classes, inputs.strategy.fusion),
                             len(inputs.strategy.members), inputs.spec.num_classes).to(inputs.example.device)
        with torch.no_grad():
            fusion = inference_cost(probe, inputs.example, probe)
        fusion_params = sum(p.numel() for p in probe.parameters())
        cost["params"] |= {"fusion": fusion_params, "training": cost["params"]["training"] + fusion_params,
                           "inference": cost["params"]["inference"] + fusion_params}
        return cost | {"flops_per_image": cost["flops_per_image"] + fusion["flops_per_image"],
                       "inference_ms_per_image": round(cost["inference_ms_per_image"]
                                                       + fusion["inference_ms_per_image"], 3)}

    def photo_predictor(self, job: SegmentRequest):
        members = job.members()
        model = StackingModel(len(members), job.spec.num_classes, job.strategy.fusion)
        load_weights(model, checkpoint(job.strategy_dir / "train"))
        model.to(job.device).eval()

        def predict(photo):
            probs = torch.stack([job.inference.probabilities(member, photo) for member in members], 1)
            return model.probabilities(model({"probs": probs, "photo": photo}))

        return predict

    def report_fields(self, strategy):
        return {"curves": False, "hypothesis": {"label": "frozen stacking", "role": "stacking", "discriminator": None,
                                                "beta": None, "init": None, "balance": None}}


class _FusionProbe(torch.nn.Module):
    """Counts the fusion net's FLOPs on member-probability inputs of the right shape."""

    def __init__(self, fusion: FusionNet, num_members: int, num_classes: int):
        super().__init__()
        self.fusion, self.num_members, self.num_classes = fusion, num_members, num_classes

    def forward(self, photo):
        n, _, h, w = photo.shape
        return self.fusion([photo.new_zeros(n, self.num_classes, h, w)] * self.num_members, photo)


class Joint(TrainedCombiner):
    """Members and fusion net in one model (JointEnsemble), trained by the engine like a member."""

    settings = JointConfig
    scores_members_inside = True

    def build(self, cfg, strategy, spec) -> tuple[JointEnsemble, dict]:
        members = {m: build_member(cfg, m, spec) for m in strategy.members}
        return JointEnsemble(members, spec.num_classes, strategy.fusion, strategy.discriminator, strategy.beta,
                             strategy.balance, strategy.balance_lr), members

    def setup(self, job):
        model, members = self.build(job.cfg, job.strategy, job.data.spec)
        member_inputs = []
        if job.strategy.init == "members":
            member_inputs = [weights_path(job.runs_dir, m) for m in job.strategy.members]
            for member, weights in zip(members.values(), member_inputs):
                load_weights(member, weights)
        val, unjittered = _dataset(job, "val"), _dataset(job, "train", jitter=False)
        # As many training images as val, without the jitter: diversity on both, epoch by epoch, shows collusion.
        monitor = Subset(unjittered, range(min(len(val), len(unjittered))))
        return TrainingSetup(model, _dataset(job, "train"), val, _dataset(job, "test"), member_inputs, monitor)

    def reads_members(self, strategy):
        return strategy.init == "members"

    def plan(self, strategy, estimator):
        return estimator.joint(strategy)

    def photo_predictor(self, job: SegmentRequest):
        model, _ = self.build(job.cfg, job.strategy, job.spec)
        load_weights(model, checkpoint(job.strategy_dir / "train"), job.spec.palette)
        model.to(job.device).eval()
        return lambda photo: job.inference.probabilities(model, photo)

    def cost(self, inputs: CostInputs) -> dict:
        joint, _ = self.build(inputs.cfg, inputs.strategy, inputs.spec)
        joint.to(inputs.example.device)
        with torch.no_grad():
            measured = inference_cost(joint.inference_network(), inputs.example, joint.inference_network())
        return {"params": role_counts(joint), **measured}

    def report_fields(self, strategy):
        role = "control" if strategy.beta == 0 else "end_to_end"
        label = (f"{'control' if role == 'control' else 'end-to-end'}, β = {strategy.beta:g}, "
                 f"{'with' if strategy.discriminator else 'no'} D, "
                 f"{'from scratch' if strategy.init == 'scratch' else 'fine-tuned'}, {strategy.balance}")
        return {"curves": True, "hypothesis": {"label": label, "role": role, "discriminator": strategy.discriminator,
                                               "beta": strategy.beta, "init": strategy.init,
                                               "balance": strategy.balance}}


register_combiner("learned", Stacking())
register_combiner("joint", Joint())
