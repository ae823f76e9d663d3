"""Seeds: one seed decides a run's initial weights, dropout masks and the order of every epoch's batches."""

from __future__ import annotations

import numpy as np
import torch

from seg_p2p.errors import UserError
from seg_p2p.settings import SEEDS


def check_seed(seed: int) -> None:
    if seed not in SEEDS:
        raise UserError(f"--seed {seed}: a seed must be in {SEEDS.start}..{SEEDS.stop - 1}; pick another")


def seed_everything(seed: int, deterministic: bool) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.backends.cudnn.benchmark = not deterministic
    # The flag torch.use_deterministic_algorithms sets; that function also imports torch._inductor for its own
    # flag, 2.6 s at the start of every stage on a 2-core CPU. engine.fit calls it when it compiles.
    torch._C._set_deterministic_algorithms(deterministic, warn_only=True)
    # Deterministic mode also NaN-fills every new tensor (3-15% of a CPU step); results do not depend on it.
    torch.utils.deterministic.fill_uninitialized_memory = False


def epoch_order(size: int, seed: int, epoch: int) -> list[int]:
    """The epoch's permutation of the training set, from its own generator: a resumed run draws the same
    batches as one that never stopped, whatever the global RNG went through."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
