"""Member registry: a member's `kind` names its builder."""

from __future__ import annotations

from seg_p2p.config import Config
from seg_p2p.errors import UserError
from seg_p2p.models.member import SegModel
from seg_p2p.models.pix2pix import Pix2Pix


def _unet_ce(cfg, spec, size):
    from seg_p2p.models.unet_ce import UnetCE  # smp + timm take seconds to import: only when used

    return UnetCE(cfg, spec.num_classes)


BUILDERS = {
    "pix2pix": lambda cfg, spec, size: Pix2Pix(cfg, spec.palette, size),
    "unet_l1": lambda cfg, spec, size: Pix2Pix(cfg, spec.palette, size),
    "unet_ce": _unet_ce,
}


def build_member(cfg: Config, name: str, spec) -> SegModel:
    if name not in cfg.members:
        raise UserError(f"member '{name}' is not defined under members: in params.yaml "
                        f"(defined: {', '.join(cfg.members)}); fix the name or add it")
    member_cfg = cfg.members[name]
    return BUILDERS[member_cfg.kind](member_cfg, spec, cfg.data.crop_size)


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_counts(model: SegModel) -> dict[str, int]:
    """Parameters by role, plus totals at training time and at inference time (no discriminator)."""
    counts = {role: count(net) for role, net in model.parameter_groups().items()}
    counts["training"] = count(model)
    counts["inference"] = count(model) - counts.get("discriminator", 0)
    return counts


def parameter_table(cfg: Config) -> dict:
    """`seg-p2p params`: counts of every member under the current settings (built on the meta device)."""
    import torch

    from seg_p2p.data.spec import load_spec

    spec = load_spec(cfg.data.dataset)
    with torch.device("meta"):
        return {name: parameter_counts(build_member(cfg, name, spec)) for name in cfg.members}
