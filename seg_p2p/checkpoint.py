"""Checkpoints: the full training state, written atomically and read with weights_only=True.

`TrainState` is everything a resumed run needs besides the data (networks, optimizers, schedulers, AMP
scaler, the CPU's and every GPU's RNG, the history so far), so a resumed run equals one that never stopped.
`best.pt` holds the weights alone, for predict, segment and the members that joint training starts from.

Once the last epoch is done nothing resumes from the optimizer state again, so the complete `last.pt` keeps only
the record (epoch, history, seconds, RNG, MLflow run): the weights are kept once, in `best.pt`, and Adam's two
moments, three times the weights' size, are not kept at all.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from seg_p2p import distributed
from seg_p2p.atomic import save_torch
from seg_p2p.config import TrainConfig
from seg_p2p.errors import UserError
from seg_p2p.run_paths import checkpoint
from seg_p2p.models.member import SegModel


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """The one reader of checkpoints: missing, truncated, damaged or not a mapping is one line naming the file.
    A damaged one is fixed by training again from scratch: deleting both checkpoints, as a finished run whose
    best.pt alone was deleted would resume from last.pt and never write best.pt again."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: checkpoint not found; train the model first (`dvc repro train`)") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is a user-facing error
        raise UserError(f"{path}: not a readable seg_p2p checkpoint (truncated or damaged: {type(exc).__name__}); "
                        "delete the run's checkpoints/ folder and train again") from None
    if not isinstance(state, dict):
        raise UserError(f"{path}: not a seg_p2p checkpoint (a {type(state).__name__}, not a mapping); delete the "
                        "run's checkpoints/ folder and train again")
    return state


def load_weights(model: SegModel, path: Path, palette: np.ndarray | None = None) -> dict:
    """Load a checkpoint's weights into `model`; a checkpoint of another model or class count is an error.

    `palette`: the dataset's class colours; a checkpoint that records other classes is refused (the rgb
    head has no class-sized weights, so its state dict alone cannot tell)."""
    state = load_checkpoint(path)
    if not isinstance(state.get("model"), dict):
        raise UserError(f"{path}: not a seg_p2p checkpoint (no model weights in it); point --checkpoint at a "
                        "checkpoints/best.pt written by `seg-p2p train`")
    if palette is not None and state.get("palette") is not None and \
            np.asarray(state["palette"]).tolist() != np.asarray(palette).tolist():
        raise UserError(f"{path}: checkpoint was trained on another dataset spec ({len(state['palette'])} "
                        f"classes; this dataset: {len(palette)}, or other colours); train on this dataset or "
                        "point --checkpoint at the right one")
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        detail = str(exc).splitlines()[0][:160]
        raise UserError(f"{path}: checkpoint does not fit this model ({detail}); it was made for another "
                        "member, architecture or class count: point --checkpoint at the right one") from None
    return state


def cuda_rng_states() -> list[torch.Tensor] | None:
    """Every CUDA generator's state (dropout on the GPU draws from these, not from the CPU generator)."""
    return torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None


def linear_decay(n_epochs: int, n_epochs_decay: int):
    """The pix2pix schedule: constant for n_epochs, then linearly to zero over n_epochs_decay."""
    return lambda epoch: 1.0 - max(0, epoch + 1 - n_epochs) / float(n_epochs_decay + 1)


class TrainState:
    """A run's optimizers, schedulers and record so far; to and from `last.pt`."""

    def __init__(self, model: SegModel, settings: TrainConfig, scaler: torch.amp.GradScaler):
        self.model, self.scaler = model, scaler
        self.optimizers = model.optimizers()
        self.schedulers = {name: torch.optim.lr_scheduler.LambdaLR(
            optimizer, linear_decay(settings.n_epochs, settings.n_epochs_decay))
            for name, optimizer in self.optimizers.items()}
        self.total_epochs = settings.n_epochs + settings.n_epochs_decay
        self.epoch, self.best_miou, self.history, self.train_seconds = 0, -1.0, [], 0.0
        self.run_id: str | None = None  # the MLflow run this training logs to, kept across resumes

    def resume(self, path: Path, identity: str) -> None:
        """Continue after the last complete epoch of `path` if it was made by the same run identity."""
        if not path.exists():
            return
        state = load_checkpoint(path)
        if state.get("identity") != identity:
            print(f"{path} was made with other settings, code or inputs; starting over", file=sys.stderr)
            return
        if not state.get("complete"):  # a complete run trains no further: its record is all it needs
            self.model.load_state_dict(state["model"])
            for name, optimizer in self.optimizers.items():
                optimizer.load_state_dict(state["optimizers"][name])
                self.schedulers[name].load_state_dict(state["schedulers"][name])
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])  # after place()'s seeding: the dropout masks continue, not replay
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.epoch, self.best_miou, self.history = state["epoch"], state["best_miou"], state["history"]
        self.train_seconds, self.run_id = state["train_seconds"], state.get("run_id")
        print(f"resuming from {path} after epoch {self.epoch}", file=sys.stderr)

    def end_epoch(self, means: dict[str, float], seconds: float) -> dict:
        """The epoch's history row (lr as used during it), then the schedulers step."""
        self.epoch += 1
        self.train_seconds += seconds
        row = {"epoch": self.epoch, "lr": self.schedulers["generator"].get_last_lr()[0], **means,
               "seconds": seconds}
        for scheduler in self.schedulers.values():
            scheduler.step()
        return row

    def save(self, train_dir: Path, identity: str, palette, val_miou: float | None, has_validation: bool) -> None:
        """best.pt when val mIoU did not drop (or there is no validation), then last.pt, the epoch's commit point:
        a kill between the two redoes this epoch and rewrites best.pt."""
        improved = (val_miou if val_miou is not None else -1.0) >= self.best_miou or not has_validation
        self.best_miou = max(self.best_miou, val_miou if val_miou is not None else -1.0)
        weights = distributed.plain_state_dict(self.model)
        palette = np.asarray(palette).tolist()
        if improved:
            save_torch(checkpoint(train_dir, "best"), {"identity": identity, "epoch": self.epoch, "model": weights,
                                              "palette": palette, "val_miou": val_miou})
        record = {"identity": identity, "epoch": self.epoch, "palette": palette, "rng": torch.get_rng_state(),
                  "cuda_rng": cuda_rng_states(), "best_miou": self.best_miou, "history": self.history,
                  "train_seconds": self.train_seconds, "run_id": self.run_id}
        if self.epoch == self.total_epochs:
            record["complete"] = True
        else:
            record |= {"model": weights, "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
                       "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
                       "scaler": self.scaler.state_dict()}
        save_torch(checkpoint(train_dir, "last"), record)
