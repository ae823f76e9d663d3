"""Experiments are DVC experiments: `seg-p2p exp run FILE` validates the delta and hands it to `dvc exp run -S`.

DVC does the rest (caching, `dvc exp show`, queues with `dvc queue start -j N`); nothing here schedules. With
`--cluster` the experiment's stages are cluster jobs in a workspace of its own (seg_p2p.cluster).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from seg_p2p.config import load_config
from seg_p2p.environment import CACHE_LINKS, dvc_executable, stage_environment
from seg_p2p.errors import UserError
from seg_p2p.settings import experiment_settings, read_yaml


def overrides(current: dict, target: dict, prefix: str = "") -> list[str]:
    """The overrides (Hydra's syntax, which `dvc exp run -S` takes) that turn params `current` into `target`:
    `++key=value` for each leaf that is new or differs (lists and nulls in YAML flow syntax), `~key` for each key
    `target` drops (a preset's section replaces params.yaml's whole)."""
    args = [f"~{prefix}{key}" for key in current if key not in target]
    for key, value in target.items():
        name, old = f"{prefix}{key}", current.get(key)
        if isinstance(value, dict) and value:
            if key in current and not isinstance(old, dict):
                args.append(f"~{name}")
            args += overrides(old if isinstance(old, dict) else {}, value, f"{name}.")
        elif key not in current or old != value:
            args.append(f"++{name}={value if isinstance(value, str) else json.dumps(value)}")
    return args


def check_study(cfg, plan: bool = True) -> None:
    """What a stage would refuse later, refused now: every strategy the study names is valid (load_config found its
    file); then (`plan`) the study's cost, and a refusal where it would not fit the free disk (seg_p2p.plan)."""
    from seg_p2p.ensemble.strategy import check_strategies  # the package registers every combiner kind first
    from seg_p2p.plan.show import announce

    check_strategies(cfg, Path("ensembles"))
    if plan:
        announce(cfg, Path.cwd())


def run_experiment(file: Path, queue: bool = False, params: Path = Path("params.yaml"), cluster: bool = False,
                   wait: bool = True) -> None:
    """`dvc exp run` with the file's settings (`queue`: queued for `dvc queue start`); `cluster`: its stages as cluster
    jobs in a workspace of its own, saved as the DVC experiment named after the file."""
    cfg = load_config(params, file)  # fail here, loudly, rather than inside a queued worker
    check_study(cfg, plan=not cluster)  # cluster_run shows the plan itself
    target = experiment_settings(params, file)
    root = target.get("data", {}).get("root")
    if root is not None:  # queued experiments run in a temp copy of the repo: make the data path absolute
        absolute = Path(root).expanduser().resolve()
        if not absolute.is_dir():
            raise UserError(f"{file}: data.root '{root}' is not a folder; point it at the dataset")
        target["data"]["root"] = str(absolute)
    changes = overrides(read_yaml(params), target)
    if cluster:
        from seg_p2p.cluster.client import cluster_run
        from seg_p2p.cluster.workspace import experiment_workspace

        workspace = experiment_workspace(Path.cwd(), cfg.cluster.folder, file.stem, changes)
        cluster_run(cfg, workspace, wait=wait, experiment=file.stem, tracking_root=Path.cwd())
        return
    command = [dvc_executable(), "exp", "run", "-n", f"{file.stem}-{time.strftime('%Y%m%d-%H%M%S')}",
               *(arg for change in changes for arg in ("-S", change))]
    if queue:
        command.append("--queue")
    print(f"experiment {cfg.name}: {' '.join(command[1:])}", file=sys.stderr)
    result = subprocess.run(command, env=stage_environment())
    if result.returncode:
        sys.exit(result.returncode)
    if queue:
        print("queued; start workers with `dvc queue start -j N` (N <= cores or GPUs) and follow them with "
              "`dvc queue status` / `dvc exp show`", file=sys.stderr)


def run_study(params: Path = Path("params.yaml")) -> None:
    """`make study`: the whole pipeline with `dvc repro`, then where to look."""
    cfg = load_config(params)
    check_study(cfg)
    dvc = dvc_executable()
    if not Path(".dvc").is_dir():
        scm = [] if Path(".git").exists() else ["--no-scm"]
        subprocess.run([dvc, "init", "-q", *scm], check=True)
        subprocess.run([dvc, "config", "core.analytics", "false"], check=True)
        subprocess.run([dvc, "config", "cache.type", CACHE_LINKS], check=True)
    started = time.perf_counter()
    result = subprocess.run([dvc, "repro"], env=stage_environment())
    if result.returncode:
        raise UserError(f"`dvc repro` failed (exit {result.returncode}); the message above names the stage")
    minutes = (time.perf_counter() - started) / 60
    print(f"\nstudy '{cfg.name}' done in {minutes:.1f} min\n"
          f"  conclusion tables: reports/{cfg.name}/conclusion.md\n"
          f"  metrics:           dvc metrics show   |   plots: dvc plots show (writes dvc_plots/index.html)\n"
          f"  MLflow:            .venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1")
