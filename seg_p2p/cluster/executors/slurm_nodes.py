"""What a SLURM partition's nodes offer (`sinfo`), and the one-line refusal of a stage whose request none of them
could ever meet: SLURM would take such a job and keep it pending (PartitionConfig, PartitionTimeLimit) forever."""

from __future__ import annotations

import math
import re
import subprocess
from dataclasses import dataclass

from seg_p2p.cluster.plan import StageJob
from seg_p2p.errors import UserError


@dataclass(frozen=True)
class Node:
    cpus: int
    mem_gb: float  # sinfo's RealMemory (MB) / 1024, as submitit writes --mem
    gpus: int
    partition_minutes: float | None  # the partition's time limit; None: infinite


def slurm_rows(command: list[str]) -> list[list[str]]:
    """The `|`-separated rows a SLURM command prints; none where it fails (a job id it does not know)."""
    out = subprocess.run(command, capture_output=True, text=True).stdout
    return [line.split("|") for line in out.splitlines() if line.strip()]


def partition_nodes(partition: str | None) -> tuple[str, list[Node]]:
    """The nodes of `partition` (None: the default one, which sinfo marks with *); none where sinfo says nothing."""
    rows = slurm_rows(["sinfo", "-h", "-a", "-N", "-o", "%P|%c|%m|%G|%l"])
    names = {row[0].rstrip("*") for row in rows}
    if partition is not None and rows and partition not in names:
        raise UserError(f"cluster.partition: '{partition}' is not a partition here (sinfo lists "
                        f"{', '.join(sorted(names))}); set one of them in params.yaml")
    chosen = [row for row in rows if (row[0].rstrip("*") == partition if partition else row[0].endswith("*"))]
    nodes = [Node(int(_number(cpus)), int(_number(mem)) / 1024, _gpus(gres), limit_minutes(limit))
             for _, cpus, mem, gres, limit in chosen]
    return (chosen[0][0].rstrip("*") if chosen else partition or "default"), nodes


def _number(field: str) -> str:
    return re.match(r"\d+", field).group()  # "2", "21694", "21694+" (sinfo's summary of unequal nodes)


def _gpus(gres: str) -> int:
    """GPUs in a node's gres: `gpu:2`, `gpu:a100:4(S:0-1),gpu:v100:2`, `(null)`."""
    return sum(int(count) for count in re.findall(r"\bgpu(?::[^:,(]+)?:(\d+)", gres))


def limit_minutes(limit: str) -> float | None:
    """A SLURM time (`infinite`, `30`, `30:00`, `2:00:00`, `1-00:00:00`) in minutes; None where unlimited."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", limit.strip())
    if not match:
        return None
    days, first, second, third = match.groups()
    if days or third:  # [days-]hours[:minutes[:seconds]]
        hours, minutes, seconds = first, second, third
    else:  # minutes[:seconds]
        hours, minutes, seconds = 0, first, second
    return int(days or 0) * 1440 + int(hours) * 60 + int(minutes or 0) + int(seconds or 0) / 60


def refusal(job: StageJob, partition: str, nodes: list[Node]) -> str | None:
    """Why no node of the partition could ever run the stage's job, naming the key to change; None if one can."""
    r, where = job.resources, f"partition {partition}"
    gpu_key = f"cluster.resources.{job.kind}.gpus" if job.processes == 1 else "train.processes"
    limit = nodes[0].partition_minutes
    if limit is not None and r.time_min > limit:
        return (f"cluster.resources.{job.kind}.time_min: {job.name} asks for {r.time_min} min, but {where} "
                f"allows at most {math.floor(limit):g} (sinfo); set it to at most {math.floor(limit):g} in params.yaml")
    asks = {f"cluster.resources.{job.kind}.cpus": (r.cpus, "CPUs", lambda node: node.cpus),
            f"cluster.resources.{job.kind}.mem_gb": (r.mem_gb, "GB", lambda node: node.mem_gb),
            gpu_key: (job.gpus, "GPUs", lambda node: node.gpus)}
    for key, (want, unit, offer) in asks.items():
        most = max(offer(node) for node in nodes)
        if want > most:
            most = math.floor(most * 10) / 10  # 21694 MB: 21.1 GB
            return (f"{key}: {job.name} asks for {want:g} {unit}, but no node of {where} has more than {most:g} "
                    f"(sinfo); set it to at most {most:g} in params.yaml")
    if not any(all(want <= offer(node) for want, _, offer in asks.values()) for node in nodes):
        return (f"cluster.resources.{job.kind}: {job.name} asks for {r.cpus} CPUs, {r.mem_gb:g} GB and "
                f"{job.gpus} GPUs on one node, but no node of {where} has all of them (sinfo -N -p {partition} "
                "-o '%c %m %G'); lower one of them in params.yaml")
    return None
