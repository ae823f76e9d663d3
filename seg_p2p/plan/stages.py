"""The study's stages as dvc.yaml expands them, each with its cost: the whole study, whatever is up to date.

The stage names and dependencies are dvc.yaml's (tests/test_plan.py checks them against `dvc stage list` and DVC's
graph); a strategy reaches the plan only through its kind (CombinerKind.plan), as every stage reaches it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from seg_p2p.plan.estimate import (CODE_LISTINGS, EVALUATE_RECORD, MLFLOW_RUN, MLFLOW_STORE, NPY_HEADER, PER_CLASS,
                                   REPORT, Estimator, StagePlan, json_bytes, ragged_bytes)


MEMBER_KINDS = ("train", "predict")  # the stage kinds that write runs/seed{K}/members


def stage_kind(name: str) -> str:
    """The dvc.yaml stage a job's or stage's name expands from: train@pix2pix-0 -> train."""
    return name.split("@", 1)[0]


def member_stages(cfg, seed: int) -> tuple[str, ...]:
    """The stages that write runs/seed{seed}/members, which the seed's later stages depend on whole."""
    return tuple(f"{kind}@{member}-{seed}" for member in cfg.members for kind in MEMBER_KINDS)


def strategy_needs(needs: tuple[str, ...], reads_members: bool) -> tuple[str, ...]:
    """What one strategy's job waits for, of its ensemble stage's `needs`: all of them, or, for a strategy that
    reads no member output, all but the members' stages."""
    return needs if reads_members else tuple(need for need in needs if stage_kind(need) not in MEMBER_KINDS)


def code_stage() -> StagePlan:
    """The listing of the code each stage kind runs (seg_p2p.stage_code), which every other stage depends on."""
    return StagePlan("code", "code", outputs=("runs/code",), disk_bytes=CODE_LISTINGS)


def prepare_stage(est: Estimator) -> StagePlan:
    """Every image at its own size, 4 bytes a pixel (photo and mask), and the names."""
    disk = json_bytes(est.spec.model_dump())
    for split in ("train", "val", "test"):
        sizes = est.sizes.split(split)
        disk += ragged_bytes([(h, w, 3) for h, w in sizes], 1) + ragged_bytes(sizes, 1)
        disk += json_bytes([f"{split}_{i:04d}" for i in range(len(sizes))])
    return StagePlan("prepare", "prepare", outputs=("data/prepared",), disk_bytes=disk)


def train_stage(est: Estimator, member: str, seed: int) -> StagePlan:
    cost = est.member(member)
    part = est.training(est.cfg.train, cost, len(est.sizes.train), history_columns=10)
    part.name, part.kind, part.needs = f"train@{member}-{seed}", "train", ("prepare",)
    part.outputs, part.rates = (f"runs/seed{seed}/members/{member}/train",), (member,)
    return part


def predict_stage(est: Estimator, member: str, seed: int) -> StagePlan:
    """The val and test predictions and the stored probabilities the ensembles read."""
    cost = est.member(member)
    images = sum(len(est.sizes.split(s)) * est.inputs[s] for s in ("val", "test"))
    disk = sum(est.predictions(split) + est.stored_probabilities(split) for split in ("val", "test"))
    batch = est.inference.loader_batch_size()
    return StagePlan(f"predict@{member}-{seed}", "predict", needs=("prepare", f"train@{member}-{seed}"),
                     outputs=(f"runs/seed{seed}/members/{member}/predict",),
                     inference_flops=round(images * cost.inference_flops), disk_bytes=disk,
                     memory_bytes=cost.weight_bytes + cost.activation_bytes * batch // est.cfg.train.batch_size,
                     rates=(member,))


def reference_stage(est: Estimator, seed: int) -> StagePlan:
    """The budget-matched network (seg_p2p.budget), trained and then predicted in one stage; its FLOPs at the rate of
    the members whose budget it has. A study without one still has the stage, which writes a note."""
    from seg_p2p.budget import member_training
    from seg_p2p.run_paths import REFERENCE

    stage = StagePlan(f"reference@{seed}", "reference", needs=("prepare",), outputs=(f"runs/seed{seed}/reference",))
    if est.cfg.reference is None:
        return stage
    training = est.training(member_training(est.cfg, REFERENCE, est.spec)[1], est.member(REFERENCE),
                            len(est.sizes.train), history_columns=10)
    predictions = predict_stage(est, REFERENCE, seed)  # its predictions only: no strategy reads its probabilities
    return replace(stage, steps=training.steps, train_flops=training.train_flops,
                   inference_flops=training.inference_flops + predictions.inference_flops,
                   disk_bytes=training.disk_bytes + sum(est.predictions(split) for split in ("val", "test")),
                   memory_bytes=max(training.memory_bytes, predictions.memory_bytes), rates=tuple(est.cfg.members))


def ensemble_stage(est: Estimator, strategies: dict, parts: dict[str, StagePlan], seed: int) -> StagePlan:
    """Every strategy of the seed (`parts`: each one's cost): in series in one process under `dvc repro`
    (dvc.yaml's ensemble@seed), a job each under `cluster run`, which a strategy that reads no member output starts
    beside the members' trainings (seg_p2p.cluster.plan.strategy_jobs)."""
    from seg_p2p.ensemble.strategy import combiner_kind

    stage = StagePlan(f"ensemble@{seed}", "ensemble", outputs=(f"runs/seed{seed}/ensembles",),
                      needs=("prepare", *member_stages(est.cfg, seed)), rates=tuple(est.cfg.members))
    for name, part in parts.items():
        reads = combiner_kind(strategies[name]).reads_members(strategies[name])
        stage.parts += (replace(part, name=f"{stage.name}/{name}", kind="ensemble", rates=stage.rates,
                                needs=strategy_needs(stage.needs, reads),
                                outputs=(f"runs/seed{seed}/ensembles/{name}",)),)
        stage.steps += part.steps
        stage.train_flops += part.train_flops
        stage.inference_flops += part.inference_flops
        stage.disk_bytes += part.disk_bytes
        stage.memory_bytes = max(stage.memory_bytes, part.memory_bytes)
    return stage


def evaluate_stage(est: Estimator, strategies: dict, seed: int) -> StagePlan:
    """Per model (member, strategy, member inside a joint run): its tallies, its JSON and its MLflow run."""
    from seg_p2p.ensemble.strategy import combiner_kind

    classes = est.spec.num_classes
    models = len(est.cfg.members) + (est.cfg.reference is not None) + sum(
        1 + (len(s.members) if combiner_kind(s).scores_members_inside else 0) for s in strategies.values())
    per_model = (NPY_HEADER + len(est.sizes.test) * 3 * classes * 8 + EVALUATE_RECORD + 2 * PER_CLASS * classes
                 + MLFLOW_RUN)
    return StagePlan(f"evaluate@{seed}", "evaluate",
                     needs=("prepare", *member_stages(est.cfg, seed), f"reference@{seed}", f"ensemble@{seed}"),
                     outputs=(f"runs/seed{seed}/evaluate", f"runs/seed{seed}/per_class_iou.json",
                              f"runs/seed{seed}/metrics.json"),
                     disk_bytes=models * per_model)


def study_stages(est: Estimator, strategies_dir: Path) -> list[StagePlan]:
    """The stages of dvc.yaml for the estimator's study, in an order that runs each after what it needs."""
    from seg_p2p.ensemble.strategy import combiner_kind, load_strategy

    cfg = est.cfg
    strategies = {name: load_strategy(cfg, name, strategies_dir) for name in cfg.strategies}
    parts = {name: combiner_kind(strategy).plan(strategy, est) for name, strategy in strategies.items()}
    stages = [code_stage(), prepare_stage(est)]
    for seed in cfg.seeds:
        for member in cfg.members:
            stages += [train_stage(est, member, seed), predict_stage(est, member, seed)]
        stages += [reference_stage(est, seed), ensemble_stage(est, strategies, parts, seed),
                   evaluate_stage(est, strategies, seed)]
    # Every stage depends on the listing of its code (dvc.yaml: runs/code/<stage>.sha256). Listed last: where the
    # stages a stage needs tie, the critical path names the first, and prepare says more than code.
    for job in (job for stage in stages[1:] for job in (stage, *stage.parts)):
        job.needs = (*job.needs, "code")
    stages.append(StagePlan("report", "report", needs=tuple(stage.name for stage in stages if stage.kind != "prepare"),
                            outputs=(f"reports/{cfg.name}",), disk_bytes=REPORT + MLFLOW_STORE))
    return stages
