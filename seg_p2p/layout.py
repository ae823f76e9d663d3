"""Where each stage writes, in one place (dvc.yaml spells the same paths out for DVC).

runs/seed{K}/members/{member}/{train,predict}/   runs/seed{K}/ensembles/{strategy}/{train,predict}/
runs/seed{K}/evaluate/{model}.json               runs/seed{K}/metrics.json
"""

from __future__ import annotations

from pathlib import Path


def model_dir(seed_dir: Path, model: str, members) -> Path:
    """Output folder of a member or strategy within one seed's folder."""
    return seed_dir / ("members" if model in members else "ensembles") / model
