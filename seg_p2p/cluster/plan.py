"""What to submit, read from DVC itself: the stage graph, what is out of date, each stage's command and outputs.

A stage is submitted when `dvc status` says it is out of date or when it is downstream of one that is (its inputs
are about to change); stages already up to date are left alone, as `dvc repro` leaves them. A stage is one job,
except an ensemble stage: a job per strategy (strategy_jobs).
"""

from __future__ import annotations

import hashlib
import json
from contextlib import chdir
from dataclasses import dataclass, replace
from pathlib import Path

from seg_p2p.config import TRAINING_STAGES, ClusterResources, Config, StageResources
from seg_p2p.errors import UserError
from seg_p2p.plan.stages import stage_kind, strategy_needs


@dataclass(frozen=True)
class StageJob:
    stage: str  # DVC's address, e.g. train@pix2pix-0
    kind: str  # the dvc.yaml stage it expands from (train): picks cluster.resources.<kind>
    cmd: str  # the stage's own command, as dvc.yaml resolves it (with --strategy for one strategy)
    needs: tuple[str, ...]  # the names of the submitted jobs it waits for (afterok)
    resources: StageResources
    processes: int  # a training's torchrun processes (train.processes); 1 elsewhere
    inputs: str  # digest of the inputs no submitted stage produces (code, params, data): see input_digest
    strategy: str = ""  # one strategy of an ensemble stage: its job runs that strategy alone

    @property
    def name(self) -> str:
        """The job's name: the stage's address, `ensemble@0/joint` for one strategy of a stage."""
        return f"{self.stage}/{self.strategy}" if self.strategy else self.stage

    @property
    def gpus(self) -> int:
        return self.resources.gpus * self.processes


def dvc_stage(name: str) -> str:
    """The DVC stage a job runs (part of): ensemble@0/joint -> ensemble@0."""
    return name.split("/", 1)[0]


def resources_for(kind: str, resources: ClusterResources) -> StageResources:
    if kind not in ClusterResources.model_fields:
        raise UserError(f"dvc.yaml: stage '{kind}' has no cluster.resources entry (known: "
                        f"{', '.join(ClusterResources.model_fields)}); run it with dvc repro")
    return getattr(resources, kind)


def input_digest(stage, produced: set[str]) -> str:
    """The state of a stage's inputs that no submitted stage writes to: code and data by DVC's hashes, params by
    value. A job's finished output is recorded later only if these are unchanged (client.collect): a stage is never
    recorded as up to date with inputs it did not run on."""
    parts = sorted((str(dep.def_path), str(dep.get_hash()) if dep.exists else "missing")
                   for dep in stage.deps if not any(_overlap(str(dep.def_path), out) for out in produced))
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _overlap(a: str, b: str) -> bool:
    """Whether one path is the other or lies inside it (runs/seed0/members holds runs/seed0/members/x/train)."""
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def read_plan(root: Path, cfg: Config) -> list[StageJob]:
    """The out-of-date stages of the pipeline in `root` and those downstream of them, in an order that runs
    every stage after the stages it depends on."""
    import networkx as nx
    from dvc.repo import Repo

    with chdir(root), Repo(str(root)) as repo:  # DVC names stages relative to the working directory
        graph = repo.index.graph  # an edge runs from a stage to a stage it depends on
        stale = set(repo.status())
        submitted = set()
        for stage in graph.nodes:
            if stage.addressing in stale:
                submitted |= {stage, *nx.ancestors(graph, stage)}
        order = [stage for stage in reversed(list(nx.topological_sort(graph))) if stage in submitted]
        produced = {str(out.def_path) for stage in order for out in stage.outs}
        jobs, named = [], {}  # named: a stage's address -> its jobs' names
        for stage in order:
            kind = stage_kind(stage.addressing)
            # a stage's cmd may be a list (the reference's: train, then predict), which DVC runs in order and stops
            # at the first that fails: `&&` in the job's shell
            cmd = " && ".join(stage.cmd) if isinstance(stage.cmd, list) else stage.cmd
            job = StageJob(stage=stage.addressing, kind=kind, cmd=cmd,
                           needs=tuple(name for dep in graph.successors(stage) if dep in submitted
                                       for name in named[dep.addressing]),
                           resources=resources_for(kind, cfg.cluster.resources),
                           processes=cfg.train.processes if kind in TRAINING_STAGES else 1,
                           inputs=input_digest(stage, produced))
            parts = strategy_jobs(job, cfg, root) if kind == "ensemble" else [job]
            named[stage.addressing] = [part.name for part in parts]
            jobs += parts
    return jobs


def strategy_jobs(job: StageJob, cfg: Config, root: Path) -> list[StageJob]:
    """An ensemble stage as a job per strategy, so a cluster runs a seed's strategies side by side; a strategy
    that reads no member output (`scratch`) waits only for the data, beside the members' trainings. Each job runs
    `seg-p2p ensemble ... --strategy NAME` into its own folder of the stage's output; `record` commits the stage
    once all of them are done."""
    from seg_p2p.ensemble.strategy import combiner_kind, load_strategy

    parts = []
    for name in cfg.strategies:
        strategy = load_strategy(cfg, name, root / "ensembles")
        needs = strategy_needs(job.needs, combiner_kind(strategy).reads_members(strategy))
        parts.append(replace(job, cmd=f"{job.cmd} --strategy {name}", needs=needs, strategy=name))
    return parts


def current_inputs(root: Path, names: list[str]) -> dict[str, str]:
    """input_digest of the stages `names` now, skipping what those same stages produce (as at submission)."""
    from dvc.repo import Repo

    with chdir(root), Repo(str(root)) as repo:
        found = {stage.addressing: stage for stage in repo.index.stages if stage.addressing in set(names)}
        produced = {str(out.def_path) for stage in found.values() for out in stage.outs}
        return {name: input_digest(stage, produced) for name, stage in found.items()}


def describe(jobs: list[StageJob]) -> str:
    """The plan as a table: stage, resources, what it waits for."""
    rows = [("job", "cpus", "gpus", "mem", "time", "after")]
    for job in jobs:
        r = job.resources
        rows.append((job.name, str(r.cpus), str(job.gpus), f"{r.mem_gb:g}G", f"{r.time_min}m",
                     ", ".join(job.needs) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]
                     for row in rows)
