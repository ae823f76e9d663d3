"""Where each stage writes, in one place (dvc.yaml spells the same paths out for DVC).

runs/seed{K}/members/{member}/{train,predict}/   runs/seed{K}/ensembles/{strategy}/{train,predict}/
runs/seed{K}/reference/{train,predict}/  the network given the ensemble's budget (seg_p2p.budget)
runs/seed{K}/evaluate/{model}.json               runs/seed{K}/metrics.json
a training's train/ folder: checkpoints/{best,last}.pt, history.csv, summary.json, samples/
a joint run's members, scored on their own: runs/seed{K}/ensembles/{strategy}/members/{member}/predict/

Every name in these paths is a plain name (seg_p2p.settings.plain_name_problem), checked when the configuration is
loaded, so each path is a direct child of the folder it is meant for, never a way out of it.
"""

from __future__ import annotations

from pathlib import Path


REFERENCE = "reference"  # the budget-matched network's name: its folder, evaluate's record, the report's row


def model_dir(seed_dir: Path, model: str, members) -> Path:
    """Output folder of a member, the reference or a strategy within one seed's folder."""
    if model == REFERENCE:
        return seed_dir / REFERENCE
    return seed_dir / ("members" if model in members else "ensembles") / model


def checkpoint(train_dir: Path, which: str = "best") -> Path:
    """A training's checkpoint in its train/ folder: `best` (the weights predict and joint training use) or `last`
    (the full state a resumed run continues from)."""
    return train_dir / "checkpoints" / f"{which}.pt"


def inside(strategy: str, member: str) -> str:
    """The name evaluate and the report give a member as trained inside a joint run (its files: `joint@pix2pix_...`)."""
    return f"{strategy}@{member}"


def inside_predict_dir(strategy_dir: Path, member: str) -> Path:
    """Test predictions of a member as trained inside the joint run whose folder is `strategy_dir`."""
    return strategy_dir / "members" / member / "predict"
