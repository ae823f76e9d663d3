"""`python -m benchmarks.startup`: what a stage costs before its first useful step, and how much of a study's wall
time is spent outside trainings and strategy runs.

Fixed cost: for each stage kind, a fresh interpreter that imports what the stage imports (seg_p2p.codedeps'
STAGE_MODULES, and the CLI) and loads the configuration as the stage does, then exits; the median of `--repeats`
runs, timed from process start to exit. The study's share: a study run by `dvc repro` (in a copy of this checkout,
or a finished one given with `--study DIR --wall SECONDS`); "inside" is each training's and strategy's
`train_seconds` (from its first step to its last checkpoint, as MLflow records it), summed; everything else
(process starts, DVC's bookkeeping, predict, evaluate, report, the fixed combiners) is outside.

stdout is one JSON document; progress goes to stderr. Run it alone on a quiet machine, `.venv` present.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks.checkout import REPO, commit_all, copy_checkout
from seg_p2p.environment import dvc_executable, stage_environment

TRACKED = ("train", "reference", "ensemble", "evaluate", "report")  # the stage kinds that open an MLflow run
COMMANDS = {"reference": 2}  # processes a stage starts where it is more than one (the reference: train, predict)
BIN = Path(sys.executable).parent


def stage_script(kind: str) -> str:
    """The imports and configuration load of one stage kind, as `seg-p2p <stage>` does them."""
    from seg_p2p.codedeps import STAGE_MODULES

    imports = "".join(f"import {module}\n" for module in ("seg_p2p.cli", *STAGE_MODULES[kind]))
    if kind == "prepare":  # data: alone (seg_p2p.data.settings), no model code
        return imports + "from seg_p2p.data.settings import load_data_config\nload_data_config('params.yaml', None)\n"
    return imports + "from seg_p2p.config import load_config\nload_config('params.yaml')\n"


def timed(command: list[str], cwd: Path, env: dict | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True, env=env)
    return time.perf_counter() - started


MLFLOW_SCRIPT = """import mlflow
from mlflow.tracking import MlflowClient
mlflow.set_tracking_uri({uri!r})
mlflow.set_experiment("startup")
MlflowClient().search_runs([mlflow.get_experiment_by_name("startup").experiment_id], max_results=1)
"""


def fixed_costs(repeats: int) -> dict[str, dict]:
    """Seconds from process start to the stage's first useful step, per stage kind; a bare interpreter; and the
    MLflow connection a tracked stage opens (import, an existing sqlite store, its experiment)."""
    from seg_p2p.codedeps import STAGE_MODULES

    with tempfile.TemporaryDirectory(prefix="seg-p2p-startup-mlflow-") as folder:
        mlflow = MLFLOW_SCRIPT.format(uri=f"sqlite:///{folder}/mlflow.db")
        timed([sys.executable, "-c", mlflow], REPO)  # creates the store: every study's first tracked stage does
        scripts = {"python": "pass", **{kind: stage_script(kind) for kind in STAGE_MODULES}, "mlflow": mlflow}
        costs = {}
        for name, script in scripts.items():
            runs = [timed([sys.executable, "-c", script], REPO) for _ in range(repeats)]
            costs[name] = {"median_s": round(statistics.median(runs), 3), "runs_s": [round(r, 3) for r in runs]}
            print(f"startup: {name}: {costs[name]['median_s']} s", file=sys.stderr)
    return costs


def dvc_overhead(study: Path) -> dict:
    """DVC's own cost of one stage in a finished study: `dvc repro -f -s code` against the `code` stage's command run
    alone (it takes a fraction of a second, so the difference is DVC's: parsing dvc.yaml and dvc.lock, hashing)."""
    from dvc.repo import Repo

    with Repo(str(study)) as repo:
        name, cmd = "code", next(s.cmd for s in repo.index.stages if s.name == "code")
    env = stage_environment()
    alone = timed(["bash", "-c", cmd], study, env)
    through_dvc = timed([dvc_executable(), "repro", "-f", "-s", name], study, env)
    return {"stage": name, "command_s": round(alone, 3), "dvc_repro_s": round(through_dvc, 3),
            "dvc_per_stage_s": round(through_dvc - alone, 3)}


def run_study(folder: Path) -> float:
    """The default study as `make study` runs it (`seg-p2p study`), in a copy of this checkout's files (.dvc/ with
    them, as a clone has it) committed to a git repository of its own; its wall time in seconds."""
    commit_all(copy_checkout(folder), "copy")
    print(f"startup: running the study in {folder} (minutes)", file=sys.stderr)
    started = time.perf_counter()
    subprocess.run([str(BIN / "seg-p2p"), "study"], cwd=folder, check=True, env=stage_environment(),
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def inside_seconds(study: Path) -> dict[str, float]:
    """Each training's and strategy's train_seconds, by its train/ folder."""
    paths = [*study.glob("runs/seed*/*/*/train/summary.json"), *study.glob("runs/seed*/reference/train/summary.json")]
    return {str(path.parent.relative_to(study)): json.loads(path.read_text())["train_seconds"]
            for path in sorted(paths)}


def stage_counts(study: Path) -> Counter:
    out = subprocess.run([dvc_executable(), "stage", "list", "--name-only"], cwd=study, capture_output=True,
                         text=True, check=True).stdout.split()
    return Counter(name.split("@")[0] for name in out)


def study_share(study: Path, wall: float, costs: dict[str, dict]) -> dict:
    """Inside and outside a finished study's wall time, and how much of outside the stages' starts explain (imports
    and configuration, DVC's bookkeeping, and the MLflow connection of a tracked stage)."""
    inside = inside_seconds(study)
    counts = stage_counts(study)
    dvc = dvc_overhead(study)
    starts = sum((costs[kind]["median_s"] * COMMANDS.get(kind, 1) + dvc["dvc_per_stage_s"]
                  + (costs["mlflow"]["median_s"] if kind in TRACKED else 0)) * n
                 for kind, n in counts.items() if kind in costs)
    return {"wall_s": round(wall, 1), "inside_s": round(sum(inside.values()), 1),
            "outside_share": round(1 - sum(inside.values()) / wall, 3), "stages": dict(counts), "dvc": dvc,
            "stage_starts_s": round(starts, 1), "stage_starts_share": round(starts / wall, 3),
            "inside_by_run": inside}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per stage kind (median)")
    parser.add_argument("--study", type=Path, help="a finished study's folder (else one is run in a temp copy)")
    parser.add_argument("--wall", type=float, help="with --study: its wall time in seconds")
    parser.add_argument("--fixed-only", action="store_true", help="the fixed costs alone, no study")
    args = parser.parse_args(argv)
    if (args.study is None) != (args.wall is None):
        parser.error("--study and --wall go together")
    result = {"benchmark": "startup", "repeats": args.repeats, "fixed_cost": fixed_costs(args.repeats)}
    if not args.fixed_only:
        if args.study is not None:
            result["study"] = study_share(args.study, args.wall, result["fixed_cost"])
        else:
            with tempfile.TemporaryDirectory(prefix="seg-p2p-startup-") as folder:
                wall = run_study(Path(folder))
                result["study"] = study_share(Path(folder), wall, result["fixed_cost"])
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
