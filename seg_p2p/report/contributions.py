"""What each part contributes, the questions a reviewer asks after table 3, from the same records and intervals:

- the members' 2 x 2: each supervision path (colour + L1, cross-entropy) without and with a GAN term, so what the
  adversarial term does is measured on each path apart from what the colour output does;
- each member as a joint run trained it, scored alone, against the same member trained on its own and inside the
  compute-matched control: does end-to-end training make it a better segmenter, or only a better complement;
- leave-one-out: an ensemble against the same training without one adversarial member: does that member add.

Cells and pairs are found from the records (a member's supervision and discriminator, a strategy's role, settings
and member list), never from names.
"""

from __future__ import annotations

import math

import pandas as pd

from seg_p2p.run_paths import inside
from seg_p2p.report.numbers import fmt, fmt_delta, mean_std, paired_delta
from seg_p2p.report.study import Study

SAME_TRAINING = ("role", "beta", "discriminator", "init", "balance")
NAN_DELTA = {"delta": math.nan, "low": math.nan, "high": math.nan}


def adversarial(study: Study, member: str) -> bool:
    return study.evals[member][0]["params"]["discriminator"] > 0


def gan_pairs(study: Study) -> list[dict]:
    """The members' 2 x 2 as the config declares it (`gan_pairs`: adversarial member -> the member it adds the GAN
    term to), one row per pair on the plain member's supervision path; a member in no pair is a row alone, never a
    side of the comparison (pairing by supervision and order would credit an architecture to the GAN term)."""
    pairs = [{"supervision": study.evals[plain][0].get("supervision"), "plain": plain, "gan": gan,
              "delta": paired_delta(study, gan, plain)}
             for gan, plain in study.cfg.gan_pairs.items() if gan in study.members and plain in study.members]
    paired = {name for pair in pairs for name in (pair["plain"], pair["gan"])}
    for member in (m for m in study.members if m not in paired):
        side = "gan" if adversarial(study, member) else "plain"
        pairs.append({"supervision": study.evals[member][0].get("supervision"), "plain": None, "gan": None,
                      side: member, "delta": None})
    return pairs


def gan_table(study: Study, pairs: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    numeric, shown = [], []
    for pair in pairs:
        cells = {}
        for column in ("plain", "gan"):
            member = pair[column]
            cells[column] = mean_std(study.values(member, "miou")) if member else (math.nan, math.nan)
        delta = pair["delta"] or NAN_DELTA
        numeric.append({"supervision": pair["supervision"], "member_without_gan": pair["plain"],
                        "miou_without_gan_mean": cells["plain"][0], "miou_without_gan_std": cells["plain"][1],
                        "member_with_gan": pair["gan"], "miou_with_gan_mean": cells["gan"][0],
                        "miou_with_gan_std": cells["gan"][1], "delta_gan": delta["delta"],
                        "delta_gan_low": delta["low"], "delta_gan_high": delta["high"]})
        shown.append({"supervision": pair["supervision"],
                      "no GAN": f"{pair['plain']}: {fmt(*cells['plain'])}" if pair["plain"] else "—",
                      "GAN": f"{pair['gan']}: {fmt(*cells['gan'])}" if pair["gan"] else "—",
                      "Δ mIoU of the GAN term [95%]": fmt_delta(pair["delta"])})
    return pd.DataFrame(numeric), pd.DataFrame(shown)


def inside_rows(study: Study, rows: list[dict]) -> list[dict]:
    """Every member of every joint run (controls included) scored alone from that run's weights, beside the member
    trained on its own and the member inside the run's compute-matched control."""
    found = []
    for row in (r for r in rows if r["members_inside"]):
        strategy, control = row["strategy"], row["control"]
        for member in row["members"]:
            values = [record["members_inside"][member]["miou"] for record in study.evals[strategy]]
            entry = {"strategy": strategy, "member": member, "alone": mean_std(study.values(member, "miou")),
                     "inside": mean_std(values), "delta_alone": paired_delta(study, inside(strategy, member), member),
                     "control": None, "in_control": (math.nan, math.nan), "delta_control": None}
            if control and member in study.evals[control][0]["members"]:
                in_control = [record["members_inside"][member]["miou"] for record in study.evals[control]]
                entry |= {"control": control, "in_control": mean_std(in_control),
                          "delta_control": paired_delta(study, inside(strategy, member), inside(control, member))}
            found.append(entry)
    return found


def inside_table(entries: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    numeric, shown = [], []
    for e in entries:
        alone, in_control = e["delta_alone"], e["delta_control"] or NAN_DELTA
        numeric.append({"strategy": e["strategy"], "member": e["member"], "miou_alone_mean": e["alone"][0],
                        "miou_inside_mean": e["inside"][0], "miou_inside_std": e["inside"][1],
                        "delta_vs_alone": alone["delta"], "delta_vs_alone_low": alone["low"],
                        "delta_vs_alone_high": alone["high"], "control": e["control"],
                        "miou_in_control_mean": e["in_control"][0], "delta_vs_control": in_control["delta"],
                        "delta_vs_control_low": in_control["low"], "delta_vs_control_high": in_control["high"]})
        shown.append({"strategy": e["strategy"], "member": e["member"], "alone": fmt(*e["alone"]),
                      "inside this run": fmt(*e["inside"]), "Δ vs alone [95%]": fmt_delta(e["delta_alone"]),
                      "inside the control": fmt(*e["in_control"]) + (f" ({e['control']})" if e["control"] else ""),
                      "Δ vs inside the control [95%]": fmt_delta(e["delta_control"])})
    return pd.DataFrame(numeric), pd.DataFrame(shown)


def leave_one_out(study: Study, rows: list[dict]) -> list[dict]:
    """Pairs of runs with the same training whose member lists differ by exactly one adversarial member."""
    pairs = []
    for full in rows:
        for reduced in rows:
            missing = set(full["members"]) - set(reduced["members"])
            if (len(missing) == 1 and set(reduced["members"]) < set(full["members"])
                    and all(full[key] == reduced[key] for key in SAME_TRAINING)
                    and adversarial(study, next(iter(missing)))):
                pairs.append({"full": full["strategy"], "without": reduced["strategy"], "member": missing.pop(),
                              "role": full["role"], "discriminator": full["discriminator"], "init": full["init"],
                              "label": full["label"],
                              "delta": paired_delta(study, full["strategy"], reduced["strategy"])})
    return pairs


def leave_one_out_table(pairs: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    numeric = [{"strategy": p["full"], "without": p["without"], "member": p["member"], "role": p["role"],
                "delta": p["delta"]["delta"], "delta_low": p["delta"]["low"], "delta_high": p["delta"]["high"]}
               for p in pairs]
    shown = [{"training": p["label"], "with": f"`{p['full']}`", "without": f"`{p['without']}`",
              "member left out": p["member"], "Δ mIoU with it [95%]": fmt_delta(p["delta"])} for p in pairs]
    return pd.DataFrame(numeric), pd.DataFrame(shown)
