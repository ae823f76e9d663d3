"""Member kinds: a kind's name maps to its settings class and its builder, registered once beside the model.

`params.yaml` picks a kind per member (`members.NAME.kind`); the config, the engine, joint training,
DDP, parameter counts and the benchmark reach a member only through this registry and the `SegModel`
contract, so a new kind is one model file and one `register_member` call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pydantic import ValidationError

from seg_p2p.errors import UserError
from seg_p2p.models.member import SegModel
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


def member_settings(name: str, raw) -> MemberConfig:
    """Validate `members.NAME` with its kind's settings class; errors read as the config's own."""
    key, kinds = f"members.{name}", ", ".join(MEMBER_KINDS)
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
        raise ValueError(error_text(exc.errors()[0], ("members", name))) from None


def build_member(cfg, name: str, spec) -> SegModel:
    """Member `name` of the study configuration `cfg` (a seg_p2p.config.Config), for the dataset `spec`."""
    if name not in cfg.members:
        raise UserError(f"member '{name}' is not defined under members: in params.yaml "
                        f"(defined: {', '.join(cfg.members)}); fix the name or add it")
    settings = cfg.members[name]
    return MEMBER_KINDS[settings.kind].build(settings, spec, cfg.data.crop_size)


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
