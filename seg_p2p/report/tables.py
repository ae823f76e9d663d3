"""The report's tables, each twice: exact numbers (CSV) and as shown (LaTeX, markdown).

The hypothesis table's rows, controls and labels come from the strategies' evaluate records (role, beta,
discriminator, init), so any strategy that declares a role in the end-to-end question is tabulated, and
compared against its compute-matched control, whatever its file is called.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from seg_p2p.atomic import write_text
from seg_p2p.report.numbers import diverged, fmt, fmt_delta, mean_std, millions, paired_delta, seed_interval, stat
from seg_p2p.report.study import Study

LATEX = {"±": r"$\pm$", "Δ": r"$\Delta$", "—": "--", "×": r"$\times$"}
# The reference network's budget counts in members.csv: exact integers, blank for ordinary members.
BUDGET_COUNTS = ("budget_inference_params", "budget_train_flops", "budget_epochs", "ensemble_inference_params",
                 "ensemble_train_flops", "ensemble_epochs")


def members_table(study: Study) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ensemble's members, then the budget-matched reference network with its budget beside the ensemble's."""
    rows, shown_rows = [], []
    for model in study.members + study.references:
        first = study.evals[model][0]
        params = first["params"]
        role = "reference" if model in study.references else "member"
        row, shown = {"model": model, "role": role}, {"member": model, "role": role}
        stat(row, shown, "miou", "mIoU", study.values(model, "miou"))
        stat(row, shown, "pixel_accuracy", "pixel acc.", study.values(model, "pixel_accuracy"))
        stat(row, shown, "mean_class_accuracy", "per-class acc.", study.values(model, "mean_class_accuracy"))
        row.update(params_generator=params["generator"], params_discriminator=params["discriminator"],
                   params_training=params["training"], flops_per_image=first["flops_per_image"])
        shown.update({"G params (M)": millions(params["generator"]),
                      "D params (M)": millions(params["discriminator"]),
                      "training params (M)": millions(params["training"]),
                      "GFLOP / image": f"{first['flops_per_image'] / 1e9:.3f}"})
        device = first.get("cost_device", "cpu")  # where evaluate timed it: the study's train.device
        stat(row, shown, "inference_ms_per_image", f"ms / image ({device})",
             study.values(model, "inference_ms_per_image"), digits=1)
        row["cost_device"] = device
        stat(row, shown, "train_seconds", "train s", study.values(model, "train_seconds"), digits=0)
        _budget_columns(study.budget(model), row, shown)
        rows.append(row)
        shown_rows.append(shown)
    return pd.DataFrame(rows).astype(dict.fromkeys(BUDGET_COUNTS, "Int64")), pd.DataFrame(shown_rows)


def _budget_columns(budget: dict | None, row: dict, shown: dict) -> None:
    """A reference network's parameters and training FLOPs beside its ensemble's (blank for ordinary members)."""
    budget = budget or {}
    row.update({f"budget_{key}": budget.get(key) for key in ("width", "inference_params", "train_flops", "epochs")})
    row.update({key: budget.get(key) for key in ("ensemble_inference_params", "ensemble_train_flops",
                                                 "ensemble_epochs")})
    row["budget_ensemble"] = " ".join(budget.get("ensemble", []))
    shown["params vs ensemble (M)"] = (f"{millions(budget['inference_params'])} / "
                                       f"{millions(budget['ensemble_inference_params'])}" if budget else "—")
    shown["train FLOPs vs members'"] = (f"{budget['train_flops'] / budget['ensemble_train_flops']:.2f}×"
                                        if budget else "—")


def best_member(study: Study) -> str:
    return max(study.members, key=lambda m: mean_std(study.values(m, "miou"))[0])


def ensembles_table(study: Study, best: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, shown_rows = [], []
    for strategy in study.strategies:
        first = study.evals[strategy][0]
        delta = paired_delta(study, strategy, best)
        row, shown = {"strategy": strategy, "members": " ".join(first["members"])}, \
            {"strategy": strategy, "members": ", ".join(first["members"])}
        stat(row, shown, "miou", "mIoU", study.values(strategy, "miou"))
        row.update(best_member=best, delta_vs_best=delta["delta"], delta_low=delta["low"],
                   delta_high=delta["high"], params_inference=first["params"]["inference"])
        shown.update({f"Δ mIoU vs {best} [95% interval]": fmt_delta(delta),
                      "inference params (M)": millions(first["params"]["inference"])})
        rows.append(row)
        shown_rows.append(shown)
    return pd.DataFrame(rows), pd.DataFrame(shown_rows)


def members_of(study: Study, strategy: str) -> list[str]:
    return study.evals[strategy][0]["members"]


def _control_for(study: Study, tested: list[str], strategy: str) -> str | None:
    """A row's compute-matched control: the beta = 0 run with the same members and init (and the same discriminator
    setting where the study has one); None for the controls themselves, frozen stacking, or when there is none."""
    role = study.hypothesis(strategy)
    if role["role"] != "end_to_end":
        return None
    controls = [s for s in tested if study.hypothesis(s)["role"] == "control" and study.hypothesis(s)["init"] ==
                role["init"] and set(members_of(study, s)) == set(members_of(study, strategy))]
    same_d = [s for s in controls if study.hypothesis(s)["discriminator"] == role["discriminator"]]
    return (same_d or controls or [None])[0]


def hypothesis_rows(study: Study) -> list[dict]:
    """The numbers behind tables 3 and 3b, the beta figure and the verdict: one dict per strategy whose record
    declares a role in the question (stacking, control, end_to_end), in the order of cfg.strategies."""
    tested = [s for s in study.strategies if study.hypothesis(s) is not None]
    rows = []
    for strategy in tested:
        role = study.hypothesis(strategy)
        first = study.evals[strategy][0]
        control = _control_for(study, tested, strategy)
        stacking = next((s for s in tested if study.hypothesis(s)["role"] == "stacking"
                         and set(members_of(study, s)) == set(first["members"])), None)
        n_diverged, unrecorded, runs = diverged(study, strategy)
        miou_mean, miou_std = mean_std(study.values(strategy, "miou"))
        rows.append({"strategy": strategy, **role, "members": first["members"], "control": control,
                     "stacking": stacking, "members_inside": first.get("members_inside") is not None,
                     "miou": study.values(strategy, "miou"), "miou_mean": miou_mean, "miou_std": miou_std,
                     "delta_control": paired_delta(study, strategy, control) if control else None,
                     "delta_stacking": paired_delta(study, strategy, stacking)
                     if stacking and strategy != stacking else None,
                     "diverged": n_diverged, "unrecorded": unrecorded, "runs": runs,
                     "collapsed": sum(r.get("discriminator_collapse") is True for r in study.evals[strategy]),
                     "signals": training_signals(study, strategy) if study.curves(strategy) else None,
                     "params_training": first["params"]["training"],
                     "params_inference": first["params"]["inference"],
                     "seconds_per_step": mean_std(study.values(strategy, "seconds_per_step"))})
    return rows


def _last_measured(history: pd.DataFrame, columns: list[str]) -> pd.Series:
    """The last epoch's values of columns measured on some epochs or steps only."""
    return history[columns].dropna().iloc[-1]


def training_signals(study: Study, strategy: str) -> dict:
    """What the joint runs record about how the members were trained (mean over seeds): the share of the gradient
    norm reaching each member's output that comes from the fusion loss (last measurement), and the members'
    diversity on the monitored training images and on val at the first and the last epoch."""
    histories = [study.history(strategy, seed) for seed in study.seeds]
    shares = {}
    for member in study.members:
        columns = [f"grad_fusion.{member}", f"grad_own.{member}"]
        if all(c in histories[0] for c in columns):
            last = [_last_measured(h, columns) for h in histories]
            shares[member] = float(np.mean([f / (f + o) if f + o > 0 else math.nan for f, o in last]))
    diversity = {}
    for split in ("train", "val"):
        column = f"{split}_diversity"
        if column in histories[0]:
            values = [h[column].dropna() for h in histories]
            diversity[split] = (float(np.mean([v.iloc[0] for v in values])),
                                float(np.mean([v.iloc[-1] for v in values])))
    return {"fusion_share": shares, "diversity": diversity}


def _yes_no(value) -> str:
    return "—" if value is None else ("yes" if value else "no")


def hypothesis_table(rows: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    numeric, shown = [], []
    nan_delta = {"delta": math.nan, "low": math.nan, "high": math.nan}
    for r in rows:
        control, stacking = r["delta_control"] or nan_delta, r["delta_stacking"] or nan_delta
        numeric.append({"strategy": r["strategy"], "role": r["role"], "beta": r["beta"],
                        "discriminator": r["discriminator"], "init": r["init"], "balance": r["balance"],
                        "miou_mean": r["miou_mean"], "miou_std": r["miou_std"],
                        "control": r["control"], "delta_vs_control": control["delta"],
                        "delta_vs_control_low": control["low"], "delta_vs_control_high": control["high"],
                        "delta_vs_stacking": stacking["delta"], "delta_vs_stacking_low": stacking["low"],
                        "delta_vs_stacking_high": stacking["high"], "diverged": r["diverged"],
                        "diverged_unrecorded": r["unrecorded"], "collapsed": r["collapsed"], "runs": r["runs"],
                        "params_training": r["params_training"], "params_inference": r["params_inference"],
                        "seconds_per_step_mean": r["seconds_per_step"][0],
                        "seconds_per_step_std": r["seconds_per_step"][1]})
        unrecorded = f" ({r['unrecorded']} not recorded)" if r["unrecorded"] else ""
        shown.append({"strategy": r["strategy"], "training": r["label"],
                      "β": "—" if r["beta"] is None else f"{r['beta']:g}", "D": _yes_no(r["discriminator"]),
                      "mIoU": fmt(r["miou_mean"], r["miou_std"]),
                      "Δ vs control [95%]": fmt_delta(r["delta_control"])
                      + (f" ({r['control']})" if r["control"] else ""),
                      "Δ vs frozen stacking [95%]": fmt_delta(r["delta_stacking"]),
                      "diverged": f"{r['diverged']}/{r['runs']}{unrecorded}",
                      "D collapsed": f"{r['collapsed']}/{r['runs']}" if r["discriminator"] else "—",
                      "training params (M)": millions(r["params_training"]), "s / step": fmt(*r["seconds_per_step"])})
    return pd.DataFrame(numeric), pd.DataFrame(shown)


def signals_table(study: Study, rows: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 3b: per joint strategy, the fusion loss's share of each member's gradient and the diversity."""
    numeric, shown = [], []
    for r in (r for r in rows if r["signals"]):
        signals = r["signals"]
        row, text = {"strategy": r["strategy"]}, {"strategy": r["strategy"]}
        for member in study.members:
            share = signals["fusion_share"].get(member, math.nan)
            row[f"fusion_share.{member}"] = share
            text[f"fusion share: {member}"] = fmt(share, digits=2)
        for split, label in (("train", "train images"), ("val", "val")):
            first, last = signals["diversity"].get(split, (math.nan, math.nan))
            row |= {f"diversity_{split}_first": first, f"diversity_{split}_last": last}
            text[f"diversity, {label} (first → last epoch)"] = f"{fmt(first)} → {fmt(last)}"
        numeric.append(row)
        shown.append(text)
    return pd.DataFrame(numeric), pd.DataFrame(shown)


def beta_points(rows: list[dict]) -> pd.DataFrame:
    """The beta figure's numbers: fine-tuned joint runs (controls included), mIoU mean and 95% t-interval over
    seeds, and the paired Δ against the run's control with the tables' bootstrap interval (0 for the control), per
    member set, discriminator setting and balancing mode (`line`: one line of the figure each)."""
    sets = [r["members"] for r in rows if r["role"] in ("control", "end_to_end") and r["init"] == "members"]
    every = [m for members in sets for m in members]
    points = []
    for r in rows:
        if r["role"] in ("control", "end_to_end") and r["init"] == "members":
            mean, low, high = seed_interval(r["miou"])
            missing = [m for m in dict.fromkeys(every) if m not in r["members"]]
            members = f"without {', '.join(missing)}" if missing else "all members"
            delta = {"delta": 0.0, "low": 0.0, "high": 0.0} if r["role"] == "control" else \
                r["delta_control"] or {"delta": math.nan, "low": math.nan, "high": math.nan}
            points.append({"strategy": r["strategy"], "beta": r["beta"], "discriminator": r["discriminator"],
                           "balance": r["balance"], "members": members,
                           "line": f"{members}, {'with' if r['discriminator'] else 'no'} D, {r['balance']}",
                           "seeds": len(r["miou"]), "miou_mean": mean, "miou_low": low, "miou_high": high,
                           "control": r["control"] or "", "delta_vs_control": delta["delta"],
                           "delta_vs_control_low": delta["low"], "delta_vs_control_high": delta["high"]})
    columns = ["strategy", "beta", "discriminator", "balance", "members", "line", "seeds", "miou_mean", "miou_low",
               "miou_high", "control", "delta_vs_control", "delta_vs_control_low", "delta_vs_control_high"]
    return pd.DataFrame(points, columns=columns).sort_values(["members", "discriminator", "balance", "beta"],
                                                             ascending=[True, False, True, True])


def per_class_table(study: Study) -> tuple[pd.DataFrame, pd.DataFrame]:
    numeric, shown = [], []
    for model in study.models:
        means = {c: mean_std([r["per_class_iou"][c] for r in study.evals[model]
                              if r["per_class_iou"][c] is not None])[0] for c in study.classes}
        numeric.append({"model": model, **means})
        shown.append({"model": model, **{c: fmt(v) for c, v in means.items()}})
    return pd.DataFrame(numeric), pd.DataFrame(shown)


def write_table(out_dir: Path, name: str, numeric: pd.DataFrame, shown: pd.DataFrame) -> str:
    """CSV (exact numbers) and LaTeX (as shown) beside the markdown that goes into conclusion.md."""
    write_text(out_dir / f"{name}.csv", numeric.to_csv(index=False))
    latex = shown.to_latex(index=False, escape=True)
    for text, command in LATEX.items():
        latex = latex.replace(text, command)
    write_text(out_dir / f"{name}.tex", latex)
    return shown.to_markdown(index=False, disable_numparse=True)
