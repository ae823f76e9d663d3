"""The conclusion of a study: tables, figures and a verdict in words, built from files alone.

Reads what `prepare`, `train`, `predict`, `ensemble` and `evaluate` wrote (seg_p2p.run_paths is the
contract), so it reruns in seconds without a model or a GPU. Numbers are means over seeds; every
difference carries a 95% bootstrap interval over test images. The prose lives in
templates/conclusion.md.j2 so it can be edited without touching the numbers.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from seg_p2p.atomic import write_json, write_text
from seg_p2p.config import Config
from seg_p2p.report.contributions import (gan_pairs, gan_table, inside_rows, inside_table, leave_one_out,
                                          leave_one_out_table)
from seg_p2p.report.figures import beta_figure, per_class_figure, qualitative_figure, training_curves_figure
from seg_p2p.report.numbers import BOOTSTRAP_SAMPLES, mean_std
from seg_p2p.report.study import Study, load_study
from seg_p2p.report.tables import (beta_points, best_member, ensembles_table, hypothesis_rows, hypothesis_table,
                                   members_table, per_class_table, signals_table, write_table)
from seg_p2p.report.ensembling import ensembling_comparison, ensembling_sentence
from seg_p2p.report.headline import headline
from seg_p2p.report.verdict import (MIN_SEEDS, adds_sentence, discriminator_pair, discriminator_sentence,
                                    diversity_sentence, gan_sentence, inside_sentence, pays_sentence, subject,
                                    trainable_sentence)

__all__ = ["write_report", "headline_metrics", "load_study", "hypothesis_rows", "subject"]

# Markdown, not HTML: nothing to escape. StrictUndefined so a misspelt variable fails instead of vanishing.
_TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                                autoescape=False, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)


def write_report(cfg: Config, data_dir: Path, runs_dir: Path, out_dir: Path) -> Path:
    """Write conclusion.md with its tables (CSV, LaTeX) and figures (PNG) into out_dir; return its path."""
    study = load_study(cfg, Path(data_dir), Path(runs_dir))
    out_dir = Path(out_dir)
    best = best_member(study)
    rows = hypothesis_rows(study)
    per_class_numeric, per_class_shown = per_class_table(study)
    gans, loo = gan_pairs(study), leave_one_out(study, rows)
    insides = inside_rows(study, rows)
    tables = {
        "members": write_table(out_dir, "members", *members_table(study)),
        "gan": write_table(out_dir, "gan_2x2", *gan_table(study, gans)),
        "inside": write_table(out_dir, "members_inside_joint", *inside_table(insides)),
        "leave_one_out": write_table(out_dir, "leave_one_out", *leave_one_out_table(loo)),
        "ensembles": write_table(out_dir, "ensembles", *ensembles_table(study, best)),
        "hypothesis": write_table(out_dir, "hypothesis", *hypothesis_table(rows)),
        "signals": write_table(out_dir, "training_signals", *signals_table(study, rows)),
        "per_class_iou": write_table(out_dir, "per_class_iou", per_class_numeric, per_class_shown),
    }
    points = beta_points(rows)
    write_text(out_dir / "beta.csv", points.to_csv(index=False))
    if len(points):
        references = {f"best member ({best})": mean_std(study.values(best, "miou"))[0]}
        references |= {f"frozen stacking ({r['strategy']})": r["miou_mean"] for r in rows if r["role"] == "stacking"}
        beta_figure(points, references, out_dir / "beta.png")
    qualitative_figure(study, out_dir / "qualitative.png")
    per_class_figure(study, per_class_numeric, out_dir / "per_class_iou.png")
    training_curves_figure(study, out_dir / "training_curves.png")

    who = subject(study)
    evaluation = evaluation_protocol(cfg)
    ensembling = ensembling_comparison(study)
    text = _TEMPLATES.get_template("conclusion.md.j2").render(
        name=cfg.name, dataset=study.dataset, seeds=", ".join(map(str, study.seeds)), first_seed=study.seeds[0],
        n_seeds=len(study.seeds), min_seeds=MIN_SEEDS, n_test=study.n_test, evaluation=evaluation,
        n_classes=len(study.classes), tables=tables, best=best, bootstrap_samples=BOOTSTRAP_SAMPLES, tested=bool(rows),
        subject=who, beta_figure=bool(len(points)), gan=gan_sentence(gans), inside=inside_sentence(insides, rows, who),
        has_inside=bool(insides), has_leave_one_out=bool(loo), diversity=diversity_sentence(rows),
        references=", ".join(f"`{r}`" for r in study.references),
        **verdict_text(study, rows, who, loo, ensembling))
    path = out_dir / "conclusion.md"
    write_text(path, text)
    write_json(out_dir / "summary.json", headline_metrics(study, rows, ensembling))
    write_json(out_dir / "study.json", {"name": cfg.name, "dataset": study.dataset, "seeds": study.seeds,
                                        "n_test": study.n_test, "classes": study.classes,
                                        "evaluation": evaluation})  # for --compare
    return path


def verdict_text(study: Study, rows: list[dict], who: str, loo: list[dict], ensembling: dict) -> dict[str, str]:
    """Parts (a) to (e) in words, and the headline made from the same numbers."""
    pair = discriminator_pair(study, rows)
    return {"trainable": trainable_sentence(rows, who), "pays": pays_sentence(rows),
            "discriminator": discriminator_sentence(pair, who), "adds": adds_sentence(loo),
            "ensembling": ensembling_sentence(ensembling), "headline": headline(rows, who, pair, loo, ensembling)}


def evaluation_protocol(cfg) -> str:
    """Which inference mode produced the numbers, in words (config.InferenceConfig)."""
    size, settings = cfg.data.crop_size, cfg.inference
    tta = ", averaged with the mirrored photo" if settings.flip_tta else ""
    if settings.mode == "slide":
        return (f"slide mode: {size} px windows ({settings.overlap} px overlap) over each photo at its native size"
                f"{tta}, scored against the labels at their native size")
    return f"resize mode: each photo resized to {size}x{size} px{tta}, scored against the labels resized alike"


def headline_metrics(study: Study, rows: list[dict], ensembling: dict) -> dict[str, float]:
    """Test mIoU of every model, each end-to-end run's delta against its control and (e)'s deltas of the best
    ensemble (means over seeds): the parent MLflow run's metrics, so DVC experiments compare side by side in MLflow."""
    metrics = {f"test_miou.{model}": mean_std(study.values(model, "miou"))[0] for model in study.models}
    metrics |= {f"delta_vs_control.{r['strategy']}": r["delta_control"]["delta"] for r in rows if r["delta_control"]}
    metrics |= {f"delta_best_ensemble_vs_{against}": ensembling[f"delta_{key}"]["delta"]
                for against, key in (("best_member", "member"), ("reference", "reference"))
                if ensembling[f"delta_{key}"]}
    return metrics
