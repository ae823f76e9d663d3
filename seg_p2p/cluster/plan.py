"""What to submit, read from DVC itself: the stage graph, what is out of date, each stage's command and outputs.

A stage is submitted when `dvc status` says it is out of date or when it is downstream of one that is (its inputs
are about to change); stages already up to date are left alone, as `dvc repro` leaves them.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import chdir
from dataclasses import dataclass
from pathlib import Path

from seg_p2p.config import ClusterResources, Config, StageResources
from seg_p2p.errors import UserError


@dataclass(frozen=True)
class StageJob:
    stage: str  # DVC's address, e.g. train@pix2pix-0
    kind: str  # the dvc.yaml stage it expands from (train): picks cluster.resources.<kind>
    cmd: str  # the stage's own command, as dvc.yaml resolves it
    needs: tuple[str, ...]  # the submitted stages it waits for (afterok)
    resources: StageResources
    processes: int  # a training's torchrun processes (train.processes); 1 elsewhere
    inputs: str  # digest of the inputs no submitted stage produces (code, params, data): see input_digest

    @property
    def gpus(self) -> int:
        return self.resources.gpus * self.processes


def stage_kind(address: str) -> str:
    return address.split("@", 1)[0]


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
        jobs = []
        for stage in order:
            kind = stage_kind(stage.addressing)
            jobs.append(StageJob(
                stage=stage.addressing, kind=kind, cmd=stage.cmd,
                needs=tuple(dep.addressing for dep in graph.successors(stage) if dep in submitted),
                resources=resources_for(kind, cfg.cluster.resources),
                processes=cfg.train.processes if kind == "train" else 1,
                inputs=input_digest(stage, produced)))
    return jobs


def current_inputs(root: Path, names: list[str]) -> dict[str, str]:
    """input_digest of the stages `names` now, skipping what those same stages produce (as at submission)."""
    from dvc.repo import Repo

    with chdir(root), Repo(str(root)) as repo:
        found = {stage.addressing: stage for stage in repo.index.stages if stage.addressing in set(names)}
        produced = {str(out.def_path) for stage in found.values() for out in stage.outs}
        return {name: input_digest(stage, produced) for name, stage in found.items()}


def describe(jobs: list[StageJob]) -> str:
    """The plan as a table: stage, resources, what it waits for."""
    rows = [("stage", "cpus", "gpus", "mem", "time", "after")]
    for job in jobs:
        r = job.resources
        rows.append((job.stage, str(r.cpus), str(job.gpus), f"{r.mem_gb:g}G", f"{r.time_min}m",
                     ", ".join(job.needs) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]
                     for row in rows)
