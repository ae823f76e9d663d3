"""`seg-p2p` command line: one subcommand per pipeline stage, each with its paths on the command line.

Every user-fixable problem is a UserError: printed as one line on stderr, exit code 2, no traceback.
Heavy imports happen inside the handlers so `seg-p2p --help` and errors stay instant.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from seg_p2p.errors import UserError


def _config(args):
    from seg_p2p.config import load_config

    # The strategies a config names are files of the command's --strategies-dir, or else of the project's ensembles/.
    return load_config(args.params, getattr(args, "experiment", None),
                       strategies_dir=getattr(args, "strategies_dir", "ensembles"))


def cmd_data_check(args):
    from seg_p2p.data.check import check_dataset
    from seg_p2p.data.settings import DataConfig, load_data_config

    # The limit prepare will apply; a dataset is often checked before any project exists, so without a params
    # file (and no --experiment) the default is used.
    own = args.experiment or Path(args.params).is_file()
    max_pixels = (load_data_config(args.params, args.experiment) if own else DataConfig()).max_image_pixels
    print(check_dataset(Path(args.path), args.dataset, max_pixels))


def cmd_prepare(args):
    from seg_p2p.data.prepare import prepare
    from seg_p2p.data.settings import load_data_config

    prepare(load_data_config(args.params, args.experiment), Path(args.out))  # data: alone, no model code


def cmd_params(args):
    from seg_p2p.budget import budget_table
    from seg_p2p.ensemble.strategy import load_strategy, training_budgets
    from seg_p2p.models import parameter_table

    cfg = _config(args)
    strategies = {name: load_strategy(cfg, name, Path("ensembles")).model_dump() for name in cfg.strategies}
    table = parameter_table(cfg) | budget_table(cfg)
    print(json.dumps(table | {"strategy_epochs": training_budgets(cfg, Path("ensembles")),
                              "strategies": strategies}, indent=2))  # bases resolved


def cmd_plan(args):
    from seg_p2p.plan.show import table
    from seg_p2p.plan.study import study_plan

    plan = study_plan(_config(args), Path(args.strategies_dir), args.throughput, args.measure)
    print(json.dumps(plan.as_json(), indent=2) if args.json else table(plan))


def cmd_train(args):
    from seg_p2p.distributed import launch_if_asked
    from seg_p2p.train import check_training, train_member

    cfg = _config(args)
    check_training(cfg, Path(args.out))  # before torchrun starts the processes, so one line says what is wrong
    launch_if_asked(cfg.train.processes, args.argv)  # train.processes > 1: this command again, under torchrun
    train_member(cfg, args.member, args.seed, Path(args.data), Path(args.out), resume=not args.fresh)


def cmd_predict(args):
    from seg_p2p.predict import predict_member

    predict_member(_config(args), args.member, Path(args.data), Path(args.checkpoint), Path(args.out), args.split)


def cmd_ensemble(args):
    from seg_p2p.ensemble.run import run_strategies

    run_strategies(_config(args), args.strategy, args.seed, Path(args.data), Path(args.runs), Path(args.out),
                   Path(args.strategies_dir))


def cmd_evaluate(args):
    from seg_p2p.evaluate import evaluate_seed

    evaluate_seed(_config(args), args.seed, Path(args.data), Path(args.runs), Path(args.out),
                  Path(args.strategies_dir))


def cmd_report(args):
    if args.compare:
        from seg_p2p.report.compare import write_comparison

        if args.data or args.runs:
            raise UserError("report --compare reads finished reports only: drop --data and --runs")
        print(f"comparison table: {write_comparison([Path(d) for d in args.compare], Path(args.out))}")
        return
    if not (args.data and args.runs):
        raise UserError("report: --data and --runs are required (or --compare DIR... for finished reports)")
    from seg_p2p.report import write_report
    from seg_p2p.tracking import Tracker

    cfg = _config(args)
    path = write_report(cfg, Path(args.data), Path(args.runs), Path(args.out))
    with Tracker(cfg, "report", {"stage": "report"}) as tracker:
        for file in sorted(path.parent.iterdir()):
            tracker.log_to_parent(file, "conclusion")
        tracker.finish_parent(json.loads((path.parent / "summary.json").read_text()))
    print(f"conclusion tables: {path}")


def cmd_segment(args):
    from seg_p2p.segment import segment

    segment(_config(args), Path(args.model), args.inputs, Path(args.out), Path(args.data), Path(args.strategies_dir),
            args.mode, args.tta)


def cmd_exp_run(args):
    from seg_p2p.experiments import run_experiment

    run_experiment(Path(args.file), queue=args.queue, params=Path(args.params), cluster=args.cluster,
                   wait=not args.no_wait)


def cmd_cluster_run(args):
    from seg_p2p.cluster.client import cluster_run

    cluster_run(_config(args), Path.cwd(), wait=not args.no_wait)


def cmd_cluster_status(args):
    from seg_p2p.cluster.client import cluster_status

    cluster_status(_config(args), Path.cwd(), wait=args.wait)


def cmd_study(args):
    from seg_p2p.experiments import run_study

    run_study(Path(args.params))


def with_experiment(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--experiment", help="experiment YAML laid over params.yaml")
    return p


def add_exp_parser(sub) -> None:
    exp = sub.add_parser("exp", help="DVC experiments").add_subparsers(dest="exp_command", required=True)
    p = exp.add_parser("run", help="run experiments/NAME.yaml as `dvc exp run -S ...`")
    p.add_argument("file")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--queue", action="store_true", help="queue it; start workers with `dvc queue start -j N`")
    where.add_argument("--cluster", action="store_true", help="run its stages as cluster jobs, in a workspace of "
                       "its own (.cluster/workspaces/NAME); it comes back as a DVC experiment")
    p.add_argument("--no-wait", action="store_true", help="with --cluster: submit and return")
    p.set_defaults(func=cmd_exp_run)


def add_cluster_parser(sub) -> None:
    cluster = sub.add_parser("cluster", help="every out-of-date DVC stage a scheduler job (SLURM via submitit)")
    cluster = cluster.add_subparsers(dest="cluster_command", required=True)
    p = cluster.add_parser("run", help="submit every out-of-date stage, each after the stages it depends on")
    p.add_argument("--no-wait", action="store_true", help="submit and return; follow with `cluster status`")
    p.set_defaults(func=cmd_cluster_run)
    p = cluster.add_parser("status", help="the jobs of the last submission and their states")
    p.add_argument("--wait", action="store_true", help="follow them until they end")
    p.set_defaults(func=cmd_cluster_status)


def add_segment_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of them")
    p.add_argument("--model", required=True, help="runs/seed<K>/members/<member> or runs/seed<K>/ensembles/<strategy>")
    p.add_argument("--out", required=True, help="folder for <stem>.png, <stem>_colour.png, <stem>_overlay.png")
    p.add_argument("--data", default="data/prepared", help="the prepared dataset the model was trained on "
                   "(its classes and colours; default: data/prepared)")
    p.add_argument("--mode", choices=["resize", "slide"], help="inference mode (default: inference.mode)")
    p.add_argument("--tta", action="store_true", help="average with the mirrored photo (inference.flip_tta)")
    p.add_argument("--strategies-dir", default="ensembles")
    p.set_defaults(func=cmd_segment)


def add_plan_parser(sub) -> None:
    p = with_experiment(sub.add_parser("plan", help="what the study will cost before it runs: jobs, training steps "
                                       "and FLOPs, disk, memory, hours, the critical path"))
    how = p.add_mutually_exclusive_group()
    how.add_argument("--throughput", type=float, metavar="TFLOPS", help="achieved training throughput, TFLOP/s, "
                     "to turn FLOPs into hours (e.g. benchmarks.train_step's gflop_per_s / 1000)")
    how.add_argument("--measure", action="store_true", help="time a few steps of each member on train.device here")
    p.add_argument("--json", action="store_true", help="the same as JSON (totals under `total`)")
    p.add_argument("--strategies-dir", default="ensembles")
    p.set_defaults(func=cmd_plan)


def add_stage_parsers(sub) -> None:
    """The commands dvc.yaml's stages run, one per stage kind."""
    p = with_experiment(sub.add_parser("train", help="train one member (resumes from its last checkpoint)"))
    p.add_argument("--member", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", required=True, help="prepared dataset folder")
    p.add_argument("--out", required=True)
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    p.set_defaults(func=cmd_train)

    p = with_experiment(sub.add_parser("predict", help="write a member's class probabilities for splits"))
    p.add_argument("--member", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--split", action="append", required=True, choices=["train", "val", "test"])
    p.set_defaults(func=cmd_predict)

    p = with_experiment(sub.add_parser("ensemble", help="run ensemble strategies from ensembles/"))
    p.add_argument("--strategy", action="append", help="a strategy to run (repeatable); default: all of strategies:")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", required=True)
    p.add_argument("--runs", required=True, help="folder holding the members' train/ and predict/ outputs")
    p.add_argument("--out", required=True, help="folder of the strategies' outputs, one folder per strategy")
    p.add_argument("--strategies-dir", default="ensembles")
    p.set_defaults(func=cmd_ensemble)

    p = with_experiment(sub.add_parser("evaluate", help="score every member and strategy of one seed"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", required=True)
    p.add_argument("--runs", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--strategies-dir", default="ensembles")
    p.set_defaults(func=cmd_evaluate)

    p = with_experiment(sub.add_parser("report", help="write the conclusion tables and figures"))
    p.add_argument("--data", help="prepared dataset folder")
    p.add_argument("--runs", help="folder of the seed{K}/ runs")
    p.add_argument("--out", required=True)
    p.add_argument("--compare", nargs="+", metavar="DIR", help="instead: one table of the test mIoU of these "
                   "finished reports (reports/<name> folders), one row per study")
    p.set_defaults(func=cmd_report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seg-p2p", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="base parameter file (default: params.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="inspect datasets").add_subparsers(dest="data_command", required=True)
    check = with_experiment(data.add_parser("check", help="detect a dataset's format and report its splits and "
                                            "classes"))
    check.add_argument("path")
    check.add_argument("--dataset", help="built-in spec name or spec YAML (default: PATH/dataset.yaml or by name)")
    check.set_defaults(func=cmd_data_check)

    p = with_experiment(sub.add_parser("prepare", help="decode the dataset once into a cache of uint8 arrays"))
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_prepare)

    p = with_experiment(sub.add_parser("params", help="print parameter counts of every member, the reference's budget "
                                       "beside the ensemble's, the epochs of every trained strategy and every "
                                       "strategy resolved, as JSON"))
    p.set_defaults(func=cmd_params)

    add_plan_parser(sub)
    add_stage_parsers(sub)
    add_segment_parser(with_experiment(sub.add_parser(
        "segment", help="label photos of any size with a trained member or strategy")))
    add_exp_parser(sub)
    add_cluster_parser(sub)

    p = sub.add_parser("study", help="run the whole study with `dvc repro` and say where the tables are")
    p.set_defaults(func=cmd_study)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        if hasattr(args, "seed"):  # every command with --seed runs torch anyway: seeding's import costs nothing extra
            from seg_p2p.seeding import check_seed

            check_seed(args.seed)
        args.func(args)
    except UserError as exc:
        print(f"seg-p2p: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"seg-p2p: interrupted ({signal.Signals(signum).name}); complete outputs are kept: run the same "
              "command again (training resumes after its last complete epoch)", file=sys.stderr)
        sys.exit(128 + signum)
