"""`seg-p2p ensemble`: run strategies of ensembles/ for one seed (all of `strategies:` unless named).

Reads the members' outputs under `runs/seed{K}/members/{member}/` and writes `{out}/{strategy}/predict/` in the
same format as a member (so evaluate treats both alike); kinds with weights also write `{out}/{strategy}/train/`.
Every named strategy is checked before the first one runs.

A strategy whose finished outputs are intact and came from the same identity (its resolved settings, its members'
settings, the data, the members' outputs it reads, the code) is not run again: DVC reruns the whole `ensemble@seed`
stage when one strategy file or one member changes, and only the strategies that see the change run.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import torch

from seg_p2p.atomic import write_json
from seg_p2p.config import Config
from seg_p2p.ensemble.strategy import StrategyConfig, StrategyRun, combiner_kind, load_strategy, weights_path
from seg_p2p.errors import UserError
from seg_p2p.fingerprint import fingerprint

DONE = "done.json"  # {out}/{strategy}/done.json, written last: the identity of its outputs and their digest


def run_strategies(cfg: Config, names: list[str] | None, seed: int, data_dir: Path, runs_dir: Path, out_dir: Path,
                   strategies_dir: Path) -> None:
    from seg_p2p.data.prepare import PreparedData

    names = names or list(cfg.strategies)
    if not names:
        raise UserError("strategies: empty and no --strategy given; list the files of ensembles/ to run")
    strategies = {name: load_strategy(cfg, name, strategies_dir) for name in names}
    data = PreparedData(data_dir)
    digests: dict[Path, str] = {}  # a seed's strategies read the same data and member files, unchanged meanwhile
    for i, (name, strategy) in enumerate(strategies.items(), 1):
        started = time.perf_counter()
        done = out_dir / name / DONE
        identity = strategy_identity(cfg, strategy, seed, data.files(), runs_dir, digests)
        record = finished(done)  # the outputs are hashed only where the identity matches
        if record and record.get("identity") == identity and record.get("outputs") == outputs_digest(out_dir / name):
            print(f"seg-p2p ensemble: seed {seed}: {name} unchanged since it ran, kept ({i}/{len(strategies)})",
                  file=sys.stderr)
            continue
        done.unlink(missing_ok=True)  # a run cut short must not pass for finished
        torch.manual_seed(seed)  # each strategy starts from the seed, whichever ran before it
        combiner_kind(strategy).run(StrategyRun(cfg, strategy, name, seed, data, runs_dir, out_dir / name))
        write_json(done, {"identity": identity, "outputs": outputs_digest(out_dir / name)})
        print(f"seg-p2p ensemble: seed {seed}: {name} done ({i}/{len(strategies)}, "
              f"{time.perf_counter() - started:.1f} s)", file=sys.stderr)


def strategy_identity(cfg: Config, strategy: StrategyConfig, seed: int, data_files: list[Path], runs_dir: Path,
                      digests: dict[Path, str]) -> str:
    """What a strategy's outputs depend on: the members' outputs count only for a strategy that reads them
    (`scratch` trains its own members from random weights, so a retrained member leaves it as it is). `digests`:
    the files' SHA-256 already computed in this run, filled in here."""
    inputs = {f"data/{path.name}": path for path in data_files}  # by name: a workspace elsewhere has the same
    if combiner_kind(strategy).reads_members(strategy):
        for member in strategy.members:
            files = sorted(path for path in (runs_dir / member / "predict").rglob("*") if path.is_file())
            inputs |= {path.relative_to(runs_dir).as_posix(): path for path in [*files, weights_path(runs_dir, member)]}
    return fingerprint(strategy.model_dump(), {m: cfg.members[m].model_dump() for m in strategy.members},
                       strategy.training(cfg.train).model_dump() if hasattr(strategy, "training") else None,
                       cfg.data.model_dump(), cfg.inference.model_dump(), seed,
                       {name: file_digest(path, digests) for name, path in inputs.items() if path.exists()},
                       code=__name__)


def file_digest(path: Path, digests: dict[Path, str]) -> str:
    if path not in digests:
        with open(path, "rb") as file:
            digests[path] = hashlib.file_digest(file, "sha256").hexdigest()
    return digests[path]


def outputs_digest(folder: Path) -> str:
    """The bytes of every file a strategy wrote: outputs damaged or removed since it finished make it run again
    (the fix `dvc repro -f -s ensemble` that a damaged file's message names)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != DONE):
        with open(path, "rb") as file:
            digest.update(path.relative_to(folder).as_posix().encode() + hashlib.file_digest(file, "sha256").digest())
    return digest.hexdigest()[:16]


def finished(done: Path) -> dict | None:
    """What a strategy's record says it finished with; None where it never finished (or the record is damaged:
    the strategy runs again)."""
    try:
        record = json.loads(done.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
