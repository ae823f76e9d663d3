"""`seg-p2p ensemble --strategy NAME`: run one strategy of ensembles/ for one seed.

Reads the members' outputs under `runs/seed{K}/members/{member}/` and writes `{out}/predict/` in the same
format as a member (so evaluate treats both alike); kinds with weights also write `{out}/train/`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from seg_p2p.config import Config
from seg_p2p.ensemble.strategy import StrategyRun, combiner_kind, load_strategy


def run_strategy(cfg: Config, name: str, seed: int, data_dir: Path, runs_dir: Path, out_dir: Path,
                 strategies_dir: Path) -> None:
    from seg_p2p.data.prepare import PreparedData

    strategy = load_strategy(cfg, name, strategies_dir)
    data = PreparedData(data_dir)
    torch.manual_seed(seed)
    combiner_kind(strategy).run(StrategyRun(cfg, strategy, name, seed, data, runs_dir, out_dir))
