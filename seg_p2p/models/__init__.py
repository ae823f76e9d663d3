"""Members: the registry and the built-in kinds (each model module registers its own)."""

from seg_p2p.models.registry import (MEMBER_KINDS, PARAMETER_ROLES, build_member, member_settings,  # noqa: F401
                                     parameter_counts, parameter_table, register_member, role_counts)
from seg_p2p.models import pix2pix, unet_ce, unet_ce_adv  # noqa: E402,F401 - importing a model module registers its kinds
