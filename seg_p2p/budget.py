"""One network given the ensemble's budget: the reference of the report's part (e), "does ensembling pay at all?".

An ensemble of overparameterised networks behaves much like one larger network with the same parameter budget (Dern,
Cunningham and Pleiss, ICML 2025), so an ensemble is worth having only if it beats that network, not merely its best
member. params.yaml's `reference:` holds a member kind's settings; here its `width` is set so that its inference
parameters match the members' summed, and its epochs so that its training FLOPs match the members' own trainings
summed: a FLOP counter over one train_step (seg_p2p.costs, as benchmarks/train_step.py counts a step) times the steps.
Every member trains on the same images at the same batch size, so the steps per epoch cancel and the epochs scale by
the ratio of step FLOPs. Both are computed from the study's own settings, so the match holds for every experiment.

The reference trains and is scored as the members are (`seg-p2p train --member reference`, runs/seed{K}/reference/)
but no strategy takes it as an input: strategies combine `members:` only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from seg_p2p.models.registry import ensemble_params, inference_params, member_config, reference_settings
from seg_p2p.run_paths import REFERENCE
from seg_p2p.settings import MemberConfig


MAX_MISMATCH = 0.10  # parameters and training FLOPs each within 10% of the ensemble's


@dataclass(frozen=True)
class Budget:
    """The reference's size and training beside the ensemble's: per step, and in epochs of the same steps."""

    width: float
    inference_params: int
    ensemble_inference_params: int
    step_flops: int  # one train_step of the reference
    ensemble_step_flops: int  # one train_step of every member, summed
    epochs: tuple[int, int]  # the reference's n_epochs, n_epochs_decay
    ensemble_epochs: int  # each member's n_epochs + n_epochs_decay
    ensemble: tuple[str, ...]

    @property
    def params_ratio(self) -> float:
        return self.inference_params / self.ensemble_inference_params

    @property
    def flops_ratio(self) -> float:
        return sum(self.epochs) * self.step_flops / (self.ensemble_epochs * self.ensemble_step_flops)

    @property
    def matched(self) -> bool:
        return all(abs(ratio - 1) <= MAX_MISMATCH for ratio in (self.params_ratio, self.flops_ratio))

    def record(self, steps_per_epoch: int) -> dict:
        """What evaluate records and the report shows: whole trainings' FLOPs at `steps_per_epoch`."""
        return {"width": self.width, "inference_params": self.inference_params,
                "ensemble_inference_params": self.ensemble_inference_params,
                "train_flops": sum(self.epochs) * steps_per_epoch * self.step_flops,
                "ensemble_train_flops": self.ensemble_epochs * steps_per_epoch * self.ensemble_step_flops,
                "epochs": sum(self.epochs), "ensemble_epochs": self.ensemble_epochs, "ensemble": list(self.ensemble)}

    def as_json(self) -> dict:
        return asdict(self) | {"params_ratio": round(self.params_ratio, 4), "flops_ratio": round(self.flops_ratio, 4),
                               "matched": self.matched}


def reference_budget(cfg, spec) -> Budget:
    """The reference's width and epochs for the study `cfg` on the dataset `spec`."""
    from seg_p2p.costs import member_step_cost

    members = sum(member_step_cost(cfg, name, spec).train_flops for name in cfg.members)
    own = member_step_cost(cfg, REFERENCE, spec).train_flops
    member_epochs = cfg.train.n_epochs + cfg.train.n_epochs_decay
    total = max(1, round(member_epochs * members / own))
    constant = round(total * cfg.train.n_epochs / member_epochs)  # the members' split of constant and decay
    settings = reference_settings(cfg, spec)
    return Budget(width=settings.width, inference_params=inference_params(settings, spec, cfg.data.crop_size),
                  ensemble_inference_params=ensemble_params(cfg, spec), step_flops=own, ensemble_step_flops=members,
                  epochs=(constant, total - constant), ensemble_epochs=member_epochs, ensemble=tuple(cfg.members))


def member_training(cfg, name: str, spec) -> tuple[MemberConfig, object]:
    """A member's settings and `train:` (a config.TrainConfig); the reference's as the members' budget sets them."""
    settings = member_config(cfg, name, spec)
    if name == REFERENCE and cfg.reference is not None:
        n_epochs, n_epochs_decay = reference_budget(cfg, spec).epochs
        return settings, cfg.train.model_copy(update={"n_epochs": n_epochs, "n_epochs_decay": n_epochs_decay})
    return settings, cfg.train


def budget_table(cfg) -> dict:
    """`seg-p2p params`: the reference's budget beside the ensemble's ({} for a study without one)."""
    from seg_p2p.data.spec import load_spec

    if cfg.reference is None:
        return {}
    return {REFERENCE: reference_budget(cfg, load_spec(cfg.data.dataset)).as_json()}
