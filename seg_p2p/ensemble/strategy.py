"""A strategy is a small YAML file in ensembles/: which members, which combiner, its settings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PositiveFloat, PositiveInt, ValidationError

from seg_p2p.config import Config, Strict, read_yaml, validation_message
from seg_p2p.errors import UserError

FIXED_COMBINERS = ("max", "min", "mean", "vote")


class FusionConfig(Strict):
    """The learned combiner: a few 3x3 convolutions over the concatenated member probabilities."""

    hidden: PositiveInt = 32
    layers: Annotated[int, Field(ge=1)] = 3
    use_photo: bool = False
    lr: PositiveFloat = 1e-3


class StrategyConfig(Strict):
    combiner: Literal["max", "min", "mean", "vote", "learned", "joint"]
    members: list[str]
    description: str = ""
    fusion: FusionConfig = FusionConfig()
    discriminator: bool = True  # joint only: keep pix2pix's discriminator in the loop (joint-no-d: false)
    init: Literal["scratch", "members"] = "scratch"  # joint only: from scratch or fine-tune trained members
    n_epochs: Annotated[int, Field(ge=0)] | None = None  # learned/joint: override train.n_epochs ...
    n_epochs_decay: Annotated[int, Field(ge=0)] | None = None  # ... and train.n_epochs_decay


def load_strategy(cfg: Config, name: str, folder: Path) -> StrategyConfig:
    path = folder / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml"))) or "none"
        raise UserError(f"{path}: no such strategy (known: {known}); add the file or fix the name in strategies:")
    try:
        strategy = StrategyConfig.model_validate(read_yaml(path))
    except ValidationError as exc:
        raise UserError(validation_message(str(path), exc)) from None
    missing = [m for m in strategy.members if m not in cfg.members]
    if missing or not strategy.members:
        raise UserError(f"{path}: members: '{missing[0] if missing else '(empty)'}' is not a member defined "
                        f"in params.yaml (defined: {', '.join(cfg.members)}); fix the list")
    if name in cfg.members:
        raise UserError(f"{path}: strategy name '{name}' is also a member name; rename the file")
    return strategy
