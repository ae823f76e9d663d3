"""`seg-p2p ensemble`: run strategies of ensembles/ for one seed (all of `strategies:` unless named).

Reads the members' outputs under `runs/seed{K}/members/{member}/` and writes `{out}/{strategy}/predict/` in the
same format as a member (so evaluate treats both alike); kinds with weights also write `{out}/{strategy}/train/`.
Every named strategy is checked before the first one runs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from seg_p2p.config import Config
from seg_p2p.ensemble.strategy import StrategyRun, combiner_kind, load_strategy
from seg_p2p.errors import UserError


def run_strategies(cfg: Config, names: list[str] | None, seed: int, data_dir: Path, runs_dir: Path, out_dir: Path,
                   strategies_dir: Path) -> None:
    from seg_p2p.data.prepare import PreparedData

    names = names or list(cfg.strategies)
    if not names:
        raise UserError("strategies: empty and no --strategy given; list the files of ensembles/ to run")
    strategies = {name: load_strategy(cfg, name, strategies_dir) for name in names}
    data = PreparedData(data_dir)
    for i, (name, strategy) in enumerate(strategies.items(), 1):
        started = time.perf_counter()
        torch.manual_seed(seed)  # each strategy starts from the seed, whichever ran before it
        combiner_kind(strategy).run(StrategyRun(cfg, strategy, name, seed, data, runs_dir, out_dir / name))
        print(f"seg-p2p ensemble: seed {seed}: {name} done ({i}/{len(strategies)}, "
              f"{time.perf_counter() - started:.1f} s)", file=sys.stderr)
