"""The plan in words: a row per stage, the totals, the critical path; and the short form the runs print first."""

from __future__ import annotations

import sys
from pathlib import Path

from seg_p2p.plan.study import StudyPlan, check_disk, study_plan


def si(value: float, unit: str) -> str:
    """1.23 G<unit>: decimal prefixes, as du -b and the FLOP literature count."""
    for prefix, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def duration(hours: float | None) -> str:
    if hours is None:
        return "-"
    return f"{hours * 3600:.0f} s" if hours < 1 else f"{hours:.1f} h"


def table(plan: StudyPlan) -> str:
    rows = [("stage", "jobs", "steps", "train FLOP", "all FLOP", "disk", "peak memory", "time", "cluster job asks")]
    for stage in plan.stages:
        r = stage.request
        rows.append((stage.name, str(len(stage.parts) or 1), str(stage.steps or "-"),
                     si(stage.train_flops, "FLOP") if stage.train_flops else "-",
                     si(stage.flops, "FLOP") if stage.flops else "-", si(stage.disk_bytes, "B"),
                     si(stage.memory_bytes, "B") if stage.memory_bytes else "-",
                     duration(plan.seconds(stage) / 3600) if plan.rates and stage.rates else "-",
                     f"{r['cpus']} cpus, {r['gpus']} gpus, {r['mem_gb']:g}G, {r['time_min']}m"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) if i in (0, len(row) - 1) else cell.rjust(width) for i, (cell, width) in
                       enumerate(zip(row, widths))).rstrip() for row in rows]
    return "\n".join([f"study '{plan.name}': data {plan.data}", *lines, "", summary(plan)])


def summary(plan: StudyPlan) -> str:
    """The totals and the critical path in a few lines (what make study, exp run and cluster run print first)."""
    total = plan.total()
    lines = [f"total: {total['jobs']} jobs, {total['steps']} training steps, {si(total['train_flops'], 'FLOP')} of "
             f"training ({si(total['flops'], 'FLOP')} with validation and prediction), disk "
             f"{si(total['disk_bytes'], 'B')} (DVC's cache links it), peak memory of a job "
             f"{si(total['peak_memory_bytes'], 'B')}"]
    path = " -> ".join(total["critical_path"])
    if plan.rates is None:
        lines.append(f"critical path ({si(total['critical_path_flops'], 'FLOP')}): {path}")
        lines.append("hours: give --throughput TFLOP/s (achieved) or --measure to time each member here")
    else:
        gpu = f", {total['gpu_hours']:.2f} GPU-hours" if total["gpu_hours"] is not None else ""
        lines.append(f"time on {total['hours_on']}: {duration(total['hours'])} of compute in all{gpu}; critical "
                     f"path {duration(total['critical_path_hours'])}: {path}")
    return "\n".join(lines)


def announce(cfg, root: Path, strategies_dir: Path = Path("ensembles")) -> StudyPlan:
    """What `make study`, `exp run` and `cluster run` print before anything runs: the plan's totals and critical
    path; a study that would not fit the free disk stops here."""
    plan = study_plan(cfg, strategies_dir)
    print(f"seg-p2p plan: {summary(plan)}".replace("\n", "\nseg-p2p plan: "), file=sys.stderr, flush=True)
    check_disk(plan, root)
    return plan
