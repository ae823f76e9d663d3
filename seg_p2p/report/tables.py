"""The report's four tables, each twice: exact numbers (CSV) and as shown (LaTeX, markdown).

The hypothesis table's rows, baseline and labels come from the strategies' evaluate records, so any
strategy that declares a role in the end-to-end question is tabulated whatever its file is called.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from seg_p2p.atomic import write_text
from seg_p2p.report.numbers import diverged, fmt, fmt_delta, mean_std, millions, paired_delta, stat
from seg_p2p.report.study import Study

LATEX = {"±": r"$\pm$", "Δ": r"$\Delta$", "—": "--"}


def members_table(study: Study) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, shown_rows = [], []
    for model in study.members:
        first = study.evals[model][0]
        params = first["params"]
        row, shown = {"model": model}, {"member": model}
        stat(row, shown, "miou", "mIoU", study.values(model, "miou"))
        stat(row, shown, "pixel_accuracy", "pixel acc.", study.values(model, "pixel_accuracy"))
        stat(row, shown, "mean_class_accuracy", "per-class acc.", study.values(model, "mean_class_accuracy"))
        row.update(params_generator=params["generator"], params_discriminator=params["discriminator"],
                   params_training=params["training"], flops_per_image=first["flops_per_image"])
        shown.update({"G params (M)": millions(params["generator"]),
                      "D params (M)": millions(params["discriminator"]),
                      "training params (M)": millions(params["training"]),
                      "GFLOP / image": f"{first['flops_per_image'] / 1e9:.3f}"})
        stat(row, shown, "train_seconds", "train s", study.values(model, "train_seconds"), digits=0)
        rows.append(row)
        shown_rows.append(shown)
    return pd.DataFrame(rows), pd.DataFrame(shown_rows)


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


def hypothesis_rows(study: Study) -> list[dict]:
    """The numbers behind table 3 and the verdict: one dict per strategy whose record declares a hypothesis
    role, in the order of cfg.strategies, each compared against the first baseline (`versus`)."""
    tested = [s for s in study.strategies if study.hypothesis(s) is not None]
    baseline = next((s for s in tested if study.hypothesis(s)["baseline"]), None)
    rows = []
    for strategy in tested:
        role = study.hypothesis(strategy)
        first = study.evals[strategy][0]
        n_diverged, unrecorded, runs = diverged(study, strategy)
        compare = baseline is not None and strategy != baseline
        miou_mean, miou_std = mean_std(study.values(strategy, "miou"))
        rows.append({"strategy": strategy, "role": role["label"], "end_to_end": bool(role["end_to_end"]),
                     "discriminator": role["discriminator"], "versus": baseline,
                     "versus_label": study.hypothesis(baseline)["label"] if baseline else None,
                     "miou_mean": miou_mean, "miou_std": miou_std,
                     "delta": paired_delta(study, strategy, baseline) if compare else None,
                     "diverged": n_diverged, "unrecorded": unrecorded, "runs": runs,
                     "params_training": first["params"]["training"],
                     "params_inference": first["params"]["inference"],
                     "seconds_per_step": mean_std(study.values(strategy, "seconds_per_step"))})
    return rows


def hypothesis_table(rows: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    versus = (rows[0]["versus"] if rows else None) or "baseline"
    numeric, shown = [], []
    for r in rows:
        delta = r["delta"] or {"delta": math.nan, "low": math.nan, "high": math.nan}
        numeric.append({"strategy": r["strategy"], "role": r["role"], "miou_mean": r["miou_mean"],
                        "miou_std": r["miou_std"], f"delta_vs_{versus}": delta["delta"], "delta_low": delta["low"],
                        "delta_high": delta["high"], "diverged": r["diverged"], "diverged_unrecorded": r["unrecorded"],
                        "runs": r["runs"], "params_training": r["params_training"],
                        "params_inference": r["params_inference"], "seconds_per_step_mean": r["seconds_per_step"][0],
                        "seconds_per_step_std": r["seconds_per_step"][1]})
        unrecorded = f" ({r['unrecorded']} not recorded)" if r["unrecorded"] else ""
        shown.append({"strategy": r["strategy"], "training": r["role"], "mIoU": fmt(r["miou_mean"], r["miou_std"]),
                      f"Δ mIoU vs {versus} [95% interval]": fmt_delta(r["delta"]),
                      "diverged": f"{r['diverged']}/{r['runs']}{unrecorded}",
                      "training params (M)": millions(r["params_training"]),
                      "inference params (M)": millions(r["params_inference"]),
                      "s / step": fmt(*r["seconds_per_step"])})
    return pd.DataFrame(numeric), pd.DataFrame(shown)


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
