"""What each stage of a study costs: training steps, FLOPs, the disk it leaves, its peak memory.

FLOPs and memory come from one train_step counted on the meta device (seg_p2p.costs), per member and per fusion
net; a joint run costs its members' steps (with or without their discriminators) plus its fusion net's. Disk is
what each stage leaves behind as the code writes it: weights once (`best.pt`), a complete `last.pt` without them,
predictions, the members' stored probabilities (seg_p2p.probabilities), evaluate's tallies; byte counts of the
small files (histories, sample grids, MLflow rows) are per-item constants measured on the tests' tiny study.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from seg_p2p.costs import StepCost, activation_scale, counting_device, member_step_cost, step_cost
from seg_p2p.inference import Inference, stored_size
from seg_p2p.plan.data import SplitSizes
from seg_p2p.probabilities import stored_bytes

NPY_HEADER = 128  # bytes before a .npy file's data
TENSOR_RECORD = 320  # bytes a checkpoint adds per state-dict entry (zip entries, alignment, pickled key)
COMPLETE_RECORD = 6_000  # a complete last.pt without its history: RNG state, identity, zip directory
HISTORY_VALUE = 40  # bytes per logged value: history.csv, the pickled history in last.pt, MLflow's rows
MLFLOW_RUN = 10_000  # bytes an MLflow run adds to mlflow.db besides its metrics: params, tags
MLFLOW_STORE = 954_368  # an empty sqlite MLflow store (its schema), made by the study's first tracked stage
SUMMARY = 2_000  # a training's summary.json
PNG_BYTES_PER_PIXEL = 1.0  # a sample grid (photo | truth | prediction rows) as PNG, per RGB pixel
EVALUATE_RECORD = 800  # evaluate's JSON per model, besides its per-class entries
PER_CLASS = 60  # bytes per class and score in evaluate's JSON (IoU, accuracy by name) and per_class_iou.json
CODE_LISTINGS = 27_000  # runs/code: a sha256sum line for each file each stage kind runs
REPORT = 500_000  # the report's tables and figures, and their MLflow copies
SAMPLE_IMAGES = 4  # seg_p2p.epoch_outputs.SAMPLE_IMAGES


@dataclass
class StagePlan:
    """One DVC stage: what it needs, runs and leaves."""

    name: str  # DVC's address, e.g. train@pix2pix-0
    kind: str  # code | prepare | train | predict | reference | ensemble | evaluate | report
    needs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()  # the paths it writes (what is already there counts as written)
    steps: int = 0
    train_flops: int = 0
    inference_flops: int = 0  # validation and prediction passes
    disk_bytes: int = 0
    memory_bytes: int = 0
    rates: tuple[str, ...] = field(default=())  # the members whose measured throughput converts its FLOPs
    request: dict = field(default_factory=dict)  # what its cluster job asks for (cluster.resources.<kind>)
    parts: tuple[StagePlan, ...] = ()  # its cluster jobs where it is more than one (an ensemble stage's strategies)

    @property
    def flops(self) -> int:
        return self.train_flops + self.inference_flops


def json_bytes(value) -> int:
    """The size write_json gives `value`."""
    return len(json.dumps(value, indent=2)) + 1


def ragged_bytes(shapes: list[tuple[int, ...]], item_bytes: int) -> int:
    """A ragged array (seg_p2p.ragged): the data file and its shapes file."""
    return NPY_HEADER + item_bytes * sum(math.prod(shape) for shape in shapes) + json_bytes([list(s) for s in shapes])


def checkpoint_bytes(cost: StepCost) -> int:
    return cost.weight_bytes + TENSOR_RECORD * cost.state_tensors


class Estimator:
    """Stage costs for the study `cfg` on data of `sizes` (the member and fusion costs counted once each)."""

    def __init__(self, cfg, spec, sizes: SplitSizes):
        self.cfg, self.spec, self.sizes = cfg, spec, sizes
        self.inference = Inference.from_config(cfg)
        self.inputs = {split: self.inference.inputs_per_photo(sizes.split(split) or [(1, 1)])
                       for split in ("train", "val", "test")}
        self._members: dict[tuple[str, bool], StepCost] = {}
        self._fusions: dict[tuple, StepCost] = {}

    def member(self, name: str, discriminator: bool = True) -> StepCost:
        """One train_step of a member; `discriminator=False`: as a joint run without D trains it."""
        key = (name, discriminator)
        if key not in self._members:
            self._members[key] = member_step_cost(self.cfg, name, self.spec, discriminator=discriminator)
        return self._members[key]

    def fusion(self, strategy, batch: int) -> StepCost:
        import torch

        from seg_p2p.ensemble.fusion import StackingModel

        key = (len(strategy.members), strategy.fusion, batch)
        if key not in self._fusions:
            with torch.random.fork_rng(), torch.device(counting_device(batch, self.cfg.data.crop_size)):
                model = StackingModel(key[0], self.spec.num_classes, strategy.fusion)
            self._fusions[key] = step_cost(model, batch, self.cfg.data.crop_size, self.spec.num_classes,
                                           activation_scale(self.cfg.train.precision), stacked_members=key[0])
        return self._fusions[key]

    # ---- what the engine does per training (engine.fit, record_epoch) ----

    def steps(self, settings, images: int) -> int:
        return (settings.n_epochs + settings.n_epochs_decay) * math.ceil(images / settings.batch_size)

    def scored_passes(self, settings, every_epoch: bool) -> int:
        """Validation passes of a training: every val_every epochs and the last, or every epoch (a joint run's
        monitor images are scored with val each epoch)."""
        epochs = settings.n_epochs + settings.n_epochs_decay
        if every_epoch:
            return epochs
        return len({e for e in range(1, epochs + 1) if e % settings.val_every == 0 or e == epochs})

    def training_files(self, settings, cost: StepCost, history_columns: int) -> int:
        """best.pt, the complete last.pt, history.csv, summary.json and the sample grids (with their MLflow copy
        and the run's MLflow rows)."""
        epochs = settings.n_epochs + settings.n_epochs_decay
        grids = len({e for e in range(1, epochs + 1) if e % settings.sample_every == 0 or e == epochs})
        side = self.cfg.data.crop_size if self.inference.slide is False else max(
            max(size) for size in self.sizes.val or self.sizes.train)
        grid_pixels = SAMPLE_IMAGES * side * 3 * side
        values = epochs * history_columns
        return (checkpoint_bytes(cost) + COMPLETE_RECORD + 3 * HISTORY_VALUE * values + SUMMARY + MLFLOW_RUN
                + 2 * grids * round(grid_pixels * PNG_BYTES_PER_PIXEL))

    def predictions(self, split: str) -> int:
        eval_sizes = [self.inference.eval_size(size) for size in self.sizes.split(split)]
        return ragged_bytes(eval_sizes, 1)

    def stored_probabilities(self, split: str) -> int:
        settings = self.cfg.inference
        stored = [stored_size(self.inference.eval_size(size), settings.max_stored_side)
                  for size in self.sizes.split(split)]
        kept = min(self.spec.num_classes, settings.stored_classes)
        shapes = [(kept, *size) for size in stored]
        files = 2 if kept < self.spec.num_classes else 1
        return files * (NPY_HEADER + json_bytes([list(s) for s in shapes])) + stored_bytes(
            self.spec.num_classes, settings.stored_classes, sum(h * w for h, w in stored))

    # ---- the stages' parts ----

    def training(self, settings, cost: StepCost, images: int, history_columns: int,
                 every_epoch: bool = False) -> StagePlan:
        """A training of one model (a member, a fusion net, a joint run) on `images` images an epoch, its val
        images scored every val_every epochs (`every_epoch`: with as many training images, every epoch)."""
        epochs = settings.n_epochs + settings.n_epochs_decay
        val = len(self.sizes.val) * self.inputs["val"] * (2 if every_epoch else 1)
        return StagePlan("", "", steps=self.steps(settings, images),
                         train_flops=round(epochs * images * cost.train_flops / settings.batch_size),
                         inference_flops=round(self.scored_passes(settings, every_epoch) * val * cost.inference_flops),
                         disk_bytes=self.training_files(settings, cost, history_columns),
                         memory_bytes=cost.memory_bytes)

    def fixed_strategy(self) -> StagePlan:
        """max, min, mean, vote: the test predictions, combined from the stored member probabilities."""
        return StagePlan("", "", disk_bytes=self.predictions("test") + MLFLOW_RUN)

    def stacking(self, strategy) -> StagePlan:
        """A fusion net fitted on the members' stored val probabilities (crops), then run on test."""
        settings = strategy.training(self.cfg.train)
        cost = self.fusion(strategy, settings.batch_size)
        part = self.training(settings, cost, len(self.sizes.val), history_columns=6)
        part.inference_flops = round(len(self.sizes.test) * self.inputs["test"] * cost.inference_flops)
        part.disk_bytes += self.predictions("test")
        return part

    def joint(self, strategy) -> StagePlan:
        """Members and fusion net trained in one loop: the members' steps (without their discriminators where the
        strategy drops them) and the fusion net's; val and monitor images scored every epoch; then the test split,
        fused and by each member alone."""
        settings = strategy.training(self.cfg.train)
        members = [self.member(m, strategy.discriminator) for m in strategy.members]
        fusion = self.fusion(strategy, settings.batch_size)
        combined = StepCost(*(sum(getattr(c, f) for c in (*members, fusion)) for f in StepCost.__dataclass_fields__))
        part = self.training(settings, combined, len(self.sizes.train), history_columns=12 * len(members),
                             every_epoch=True)
        test = len(self.sizes.test) * self.inputs["test"]
        part.inference_flops += round(test * (2 * sum(m.inference_flops for m in members) + fusion.inference_flops))
        part.disk_bytes += (1 + len(members)) * self.predictions("test")
        part.rates = tuple(strategy.members)
        return part
