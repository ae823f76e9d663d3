"""`seg-p2p report --compare DIR...`: several studies' test mIoU in one table, one row per experiment.

Reads only what `seg-p2p report` left in each folder (study.json, members.csv, ensembles.csv), so studies of
other datasets, settings or machines line up in one table for a paper without rerunning anything. Every folder
is checked before the first file is written.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from seg_p2p.atomic import check_writable, write_text
from seg_p2p.errors import UserError
from seg_p2p.report.numbers import fmt
from seg_p2p.report.tables import write_table
from seg_p2p.stored import read_csv, read_json

RERUN = "rerun `dvc repro report` (or `seg-p2p report`) for that study"


def read_report(folder: Path) -> dict:
    """One study's name, dataset, seed count and mean/std test mIoU per model (members, then strategies)."""
    study = folder / "study.json"
    if not study.is_file():
        raise UserError(f"{study}: missing, so {folder} holds no seg_p2p report (or one older than --compare); "
                        f"point --compare at reports/<name> folders, or {RERUN}")
    info = read_json(study, RERUN)
    try:
        name, dataset, seeds = str(info["name"]), str(info["dataset"]), len(info["seeds"])
    except (KeyError, TypeError):
        raise UserError(f"{study}: not a report's study.json (needs name, dataset, seeds); {RERUN}") from None
    models = {}
    for table, key in (("members.csv", "model"), ("ensembles.csv", "strategy")):
        path = folder / table
        frame = read_csv(path, RERUN)
        missing = [column for column in (key, "miou_mean", "miou_std") if column not in frame]
        if missing:
            raise UserError(f"{path}: no column '{missing[0]}'; {RERUN}")
        models |= {row[key]: (float(row["miou_mean"]), float(row["miou_std"])) for _, row in frame.iterrows()}
    return {"experiment": name, "dataset": dataset, "seeds": seeds, "models": models}


def write_comparison(folders: list[Path], out_dir: Path) -> Path:
    """comparison.md, .csv (exact means and stds) and .tex in out_dir; returns the markdown's path."""
    reports = [read_report(Path(folder)) for folder in folders]
    check_writable(out_dir)
    models = list(dict.fromkeys(model for report in reports for model in report["models"]))
    numeric, shown = [], []
    for report in reports:
        row = {key: report[key] for key in ("experiment", "dataset", "seeds")}
        view = dict(row)
        for model in models:
            mean, std = report["models"].get(model, (math.nan, math.nan))
            row |= {f"{model}_miou_mean": mean, f"{model}_miou_std": std}
            view[model] = fmt(mean, std)
        numeric.append(row)
        shown.append(view)
    table = write_table(Path(out_dir), "comparison", pd.DataFrame(numeric), pd.DataFrame(shown))
    path = Path(out_dir) / "comparison.md"
    write_text(path, "# Test mIoU across studies\n\n" + table + "\n\nEach cell is a model's test mIoU, the mean over "
               "the study's seeds ± their standard deviation (ddof 1) where it has more than one; — where the "
               "study has no such model. Intervals and the end-to-end verdict are in each study's conclusion.md.\n")
    return path
