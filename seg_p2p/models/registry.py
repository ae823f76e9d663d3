"""Member kinds: a kind's name maps to its settings class and its builder, registered once beside the model.

`params.yaml` picks a kind per member (`members.NAME.kind`); the config, the engine, joint training,
DDP, parameter counts and the benchmark reach a member only through this registry and the `SegModel`
contract, so a new kind is one model file and one `register_member` call.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable

import torch
from pydantic import ValidationError

from seg_p2p.errors import UserError
from seg_p2p.models.member import SegModel
from seg_p2p.run_paths import REFERENCE
from seg_p2p.settings import MemberConfig, error_text


@dataclass(frozen=True)
class MemberKind:
    config: type[MemberConfig]
    build: Callable[[MemberConfig, object, int], SegModel]  # (settings, dataset spec, crop size) -> model


MEMBER_KINDS: dict[str, MemberKind] = {}


def register_member(kind: str, config: type[MemberConfig],
                    build: Callable[[MemberConfig, object, int], SegModel]) -> None:
    """Make `kind` usable in params.yaml: `config` validates its settings, `build` makes the model."""
    if kind in MEMBER_KINDS:
        raise ValueError(f"member kind '{kind}' is already registered")
    MEMBER_KINDS[kind] = MemberKind(config, build)


def member_settings(name: str, raw, key: str | None = None) -> MemberConfig:
    """Validate `members.NAME` (or the settings at `key`) with its kind's settings class; errors read as the config's
    own."""
    key, kinds = key or f"members.{name}", ", ".join(MEMBER_KINDS)
    if isinstance(raw, MemberConfig):
        return raw
    if not isinstance(raw, dict):
        raise ValueError(f"{key}: expected a mapping of settings with a 'kind' (got {raw!r:.60}); see params.yaml")
    if "kind" not in raw:
        raise ValueError(f"{key}: no 'kind'; set kind: to one of {kinds}")
    if raw["kind"] not in MEMBER_KINDS:
        raise ValueError(f"{key}.kind: '{raw['kind']}' is not a member kind; use one of {kinds}")
    try:
        return MEMBER_KINDS[raw["kind"]].config.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(error_text(exc.errors()[0], tuple(key.split(".")))) from None


def build_member(cfg, name: str, spec) -> SegModel:
    """Member `name` of the study configuration `cfg` (a seg_p2p.config.Config), for the dataset `spec`; `reference`:
    the network given the ensemble's budget (seg_p2p.budget)."""
    return build_settings(member_config(cfg, name, spec), spec, cfg.data.crop_size)


def member_config(cfg, name: str, spec) -> MemberConfig:
    """The settings member `name` is built with: its own, or for `reference` the widened ones of reference_settings."""
    if name == REFERENCE and cfg.reference is not None:
        return reference_settings(cfg, spec)
    if name not in cfg.members:
        raise UserError(f"member '{name}' is not defined under members: in params.yaml (defined: "
                        f"{', '.join(cfg.members)}{', and reference' if cfg.reference is not None else ''}); fix the "
                        "name or add it")
    return cfg.members[name]


def build_settings(settings: MemberConfig, spec, size: int) -> SegModel:
    """The model of a member kind's settings, for the dataset `spec` at crops of `size` px."""
    return MEMBER_KINDS[settings.kind].build(settings, spec, size)


PARAMETER_ROLES = ("generator", "discriminator", "fusion", "training", "inference")


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_counts(model: SegModel) -> dict[str, int]:
    """Parameters by role, plus totals at training time and at inference time (no discriminator)."""
    counts = {role: count(net) for role, net in model.networks().items()}
    counts["training"] = count(model)
    counts["inference"] = count(model) - counts.get("discriminator", 0)
    return counts


def role_counts(model: SegModel) -> dict[str, int]:
    """parameter_counts with every role of PARAMETER_ROLES present (0 where the model has no such network)."""
    counts = parameter_counts(model)
    return {role: counts.get(role, 0) for role in PARAMETER_ROLES}


def parameter_table(cfg) -> dict:
    """`seg-p2p params`: counts of every member under the current settings (built on the meta device)."""
    import torch

    from seg_p2p.data.spec import load_spec

    spec = load_spec(cfg.data.dataset)
    with torch.device("meta"):
        return {name: parameter_counts(build_member(cfg, name, spec)) for name in cfg.members}


# The budget-matched network (seg_p2p.budget says what it is and why): `reference:` widened until its parameters match
# the ensemble's. Built here, beside every member, so the registry builds it as it builds any member.
WIDTHS = (1 / 16, 16.0)  # the widths searched, a geometric bisection
BISECTIONS = 24

_widths: dict[str, float] = {}  # settings -> matched width, for this process (a search builds ~25 networks on meta)


def inference_params(settings: MemberConfig, spec, size: int) -> int:
    with torch.random.fork_rng(), torch.device("meta"):
        return parameter_counts(build_settings(settings, spec, size))["inference"]


def ensemble_params(cfg, spec) -> int:
    """The members' inference parameters summed: what a strategy over every member runs, its fusion net aside."""
    return sum(inference_params(settings, spec, cfg.data.crop_size) for settings in cfg.members.values())


def reference_settings(cfg, spec) -> MemberConfig:
    """`reference:` widened until its inference parameters are the closest to the members' summed."""
    key = json.dumps([cfg.reference.model_dump(), {m: s.model_dump() for m, s in cfg.members.items()},
                      cfg.data.crop_size, spec.num_classes])
    if key not in _widths:
        target, size = ensemble_params(cfg, spec), cfg.data.crop_size

        def params(width: float) -> int:
            return inference_params(cfg.reference.model_copy(update={"width": width}), spec, size)

        low, high = WIDTHS
        for _ in range(BISECTIONS):
            middle = math.sqrt(low * high)
            low, high = (middle, high) if params(middle) < target else (low, middle)
        _widths[key] = min((round(low, 3), round(high, 3)), key=lambda width: abs(params(width) - target))
    return cfg.reference.model_copy(update={"width": _widths[key]})


def no_reference(cfg, name: str, out_dir) -> bool:
    """Whether `name` is the reference of a study without one (reference: null): then dvc.yaml's reference stage has
    nothing to do, and its output folder says so."""
    if name != REFERENCE or cfg.reference is not None:
        return False
    from seg_p2p.atomic import write_json

    write_json(out_dir / "none.json", {"reference": None, "why": "reference: null in params.yaml"})
    print(f"{out_dir}: no reference network in this study (reference: null)")
    return True
