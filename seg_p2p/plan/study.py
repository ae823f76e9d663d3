"""What a study will cost before it runs: jobs, training steps and FLOPs, disk, memory, hours (`seg-p2p plan`).

Every stage of the study (seg_p2p.plan.stages), with the experiment's settings applied as `exp run` applies them;
FLOPs become hours at a given throughput or at the rates `--measure` times on this machine; the critical path is
the longest chain of stages, which bounds the wall time however many GPUs run the study. `make study`, `exp run`
and `cluster run` show it first, and stop where the study would not fit the free disk.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from seg_p2p.config import GPU_STAGES, TRAINING_STAGES
from seg_p2p.errors import UserError
from seg_p2p.plan.estimate import Estimator, StagePlan
from seg_p2p.plan.rates import Rates, measured_rates


@dataclass
class StudyPlan:
    name: str
    data: str  # where the image sizes come from
    stages: list[StagePlan]
    rates: Rates | None
    gpus: dict[str, int]  # GPUs a job of each GPU stage kind holds (0 on the CPU)

    def seconds(self, stage: StagePlan) -> float | None:
        return None if self.rates is None else self.rates.seconds(stage)

    def jobs(self) -> list[StagePlan]:
        """The jobs `cluster run` submits, in dependency order: a job per stage, a job per strategy of an ensemble
        stage; a job that needs such a stage waits for all of its strategies."""
        jobs, named = [], {}  # named: a stage -> the names of its jobs
        for stage in self.stages:
            parts = stage.parts or (stage,)
            named[stage.name] = [part.name for part in parts]
            jobs += [replace(part, needs=tuple(name for need in part.needs for name in named[need]))
                     for part in parts]
        return jobs

    def critical_path(self) -> list[str]:
        """The longest chain of the cluster's jobs, by time where rates are known, else by FLOPs."""
        jobs = self.jobs()
        weight = {s.name: self.seconds(s) if self.rates else float(s.flops) for s in jobs}
        best: dict[str, tuple[float, list[str]]] = {}
        for stage in jobs:  # in dependency order
            before = max((best[need] for need in stage.needs), default=(0.0, []), key=lambda item: item[0])
            best[stage.name] = (before[0] + weight[stage.name], before[1] + [stage.name])
        longest = max(length for length, _ in best.values())
        return [path for length, path in best.values() if length == longest][-1]  # ties: to the furthest stage

    def hours(self, stages: list[StagePlan], per_gpu: bool = False) -> float | None:
        if self.rates is None:
            return None
        return sum(self.seconds(s) * (self.gpus.get(s.kind, 0) if per_gpu else 1) for s in stages) / 3600

    def total(self) -> dict:
        path = self.critical_path()
        on_path = [s for s in self.jobs() if s.name in path]
        return {"jobs": len(self.jobs()), "steps": sum(s.steps for s in self.stages),
                "train_flops": sum(s.train_flops for s in self.stages), "flops": sum(s.flops for s in self.stages),
                "disk_bytes": sum(s.disk_bytes for s in self.stages),
                "peak_memory_bytes": max(s.memory_bytes for s in self.stages),
                "hours": self.hours(self.stages), "gpu_hours": self.hours(self.stages, per_gpu=True) if self.gpus
                else None, "hours_on": self.rates.device if self.rates else None,
                "critical_path": path, "critical_path_hours": self.hours(on_path),
                "critical_path_flops": sum(s.flops for s in on_path)}

    def as_json(self) -> dict:
        def row(s: StagePlan) -> dict:
            return asdict(s) | {"flops": s.flops, "hours": None if self.rates is None else self.seconds(s) / 3600,
                                "parts": [row(part) for part in s.parts]}

        stages = [row(s) for s in self.stages]
        return {"study": self.name, "data": self.data, "stages": stages, "total": self.total()}


def remaining_bytes(plan: StudyPlan, root: Path) -> int:
    """The disk the study still has to write: each stage's, less what its outputs already hold."""
    return sum(max(0, stage.disk_bytes - sum(tree_bytes(root / out) for out in stage.outputs))
               for stage in plan.stages)


def tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file() and not entry.is_symlink())


def check_disk(plan: StudyPlan, root: Path) -> None:
    """Stop before any stage runs when what the study still writes exceeds the free disk."""
    needed, free = remaining_bytes(plan, root), shutil.disk_usage(root).free
    if needed > free:
        raise UserError(f"{root}: the study '{plan.name}' still writes {needed / 1e9:.1f} GB and {free / 1e9:.1f} GB "
                        "are free (seg-p2p plan itemises it); free disk space or shrink the study")


def study_plan(cfg, strategies_dir: Path = Path("ensembles"), throughput_tflops: float | None = None,
               measure: bool = False) -> StudyPlan:
    """The plan of the study `cfg`; hours at `throughput_tflops` achieved, or at rates measured here."""
    from seg_p2p.data.spec import load_spec
    from seg_p2p.plan.data import split_sizes
    from seg_p2p.plan.stages import study_stages

    spec = load_spec(cfg.data.dataset)
    sizes = split_sizes(cfg.data)
    estimator = Estimator(cfg, spec, sizes)
    stages = study_stages(estimator, strategies_dir)
    rates = None
    if throughput_tflops:
        rates = Rates(f"{throughput_tflops:g} TFLOP/s achieved", flops_per_second=throughput_tflops * 1e12)
    elif measure:
        rates = measured_rates(cfg, spec, estimator)
    for stage in stages:
        stage.request = job_request(cfg, stage.kind)
    gpus = {kind: job_request(cfg, kind)["gpus"] for kind in GPU_STAGES} if cfg.train.device == "cuda" else {}
    return StudyPlan(cfg.name, sizes.source, stages, rates, gpus)


def job_request(cfg, kind: str) -> dict:
    """What a cluster job of a stage kind asks for: cluster.resources.<kind>, a training's GPUs per process."""
    request = getattr(cfg.cluster.resources, kind).model_dump()
    if kind in TRAINING_STAGES:
        request["gpus"] *= cfg.train.processes
    return request

