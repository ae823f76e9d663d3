"""The verdict in words, generated from the same numbers and intervals as the tables.

Sentences are built here rather than written by hand so the words can never disagree with table 3.
Which run answers which question is read from the rows' roles (end-to-end, with or without the
discriminator), never from strategy names; a missing run is described by the role it would have played.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from seg_p2p.report.numbers import fmt, paired_delta
from seg_p2p.report.study import Study


def subject(study: Study) -> str:
    """Who the end-to-end question is about: the adversarially trained members (pix2pix today)."""
    named = [m for m in study.members if study.evals[m][0]["params"]["discriminator"] > 0]
    return ", ".join(named) if named else "the members"


def _end_to_end(rows: list[dict], discriminator: bool) -> dict | None:
    return next((r for r in rows if r["end_to_end"] and r["discriminator"] is discriminator), None)


def _delta_words(delta: dict) -> str:
    excludes = delta["low"] > 0 or delta["high"] < 0
    return (f"{delta['delta']:+.3f} mIoU (95% interval [{delta['low']:+.3f}, {delta['high']:+.3f}] "
            f"{'excludes' if excludes else 'includes'} 0)")


def effect(delta: dict) -> str:
    """'helps', 'hurts' or neither, by whether the interval excludes 0 and on which side."""
    if delta["low"] > 0:
        return "helps"
    if delta["high"] < 0:
        return "hurts"
    return "neither helps nor hurts measurably"


def end_to_end_sentence(rows: list[dict], subject: str = "the members") -> str:
    """Whether `subject` can be trained end-to-end with the other networks, read off the first end-to-end
    row that keeps the discriminator."""
    joint = _end_to_end(rows, discriminator=True)
    if joint is None:
        return (f"This study has no end-to-end run with the discriminator, so it does not test whether {subject} "
                "can be trained end-to-end.")
    name = f"`{joint['strategy']}`"
    k, unrecorded, n = joint["diverged"], joint["unrecorded"], joint["runs"]
    if k == n:
        return (f"No: {subject} could not be trained end-to-end with the other networks here "
                f"({n} of {n} {name} runs diverged).")
    miou = fmt(joint["miou_mean"], joint["miou_std"])
    delta = joint["delta"]
    versus = f"{_delta_words(delta)} vs {joint['versus_label']}" if delta else \
        "with no baseline run to compare against"
    if k == 0:
        how = "stably" if not unrecorded else "without a recorded divergence"
        runs = f"0 of {n} runs diverged" + (f", {unrecorded} not recorded" if unrecorded else "")
        sentence = (f"Yes: {subject} can be trained end-to-end with the other networks: {name} trained {how} "
                    f"({runs}) and reached {miou} mIoU, {versus}")
    else:
        sentence = (f"Only unreliably: trained end-to-end with the other networks, {subject} diverged in {k} of {n} "
                    f"{name} runs; averaged over all runs, diverged ones included, {name} reached {miou} mIoU, "
                    f"{versus}")
    if delta:
        sentence += f", so end-to-end training {effect(delta)}"
    return sentence + "."


def _gradient_ratio(history: pd.DataFrame, member: str) -> float:
    """grad_fusion / grad_own of the last epoch that measured them (they are measured on some steps only)."""
    last = history[[f"grad_fusion.{member}", f"grad_own.{member}"]].dropna().iloc[-1]
    return float(last.iloc[0] / last.iloc[1])


def gradient_sentence(study: Study) -> str:
    """How much of each member's training signal comes from the fusion loss in the strategies that train
    their members (those with curves): the ratio of the gradient norms reaching the member's output
    (history.csv), mean over seeds."""
    parts = []
    for strategy in (s for s in study.strategies if study.curves(s)):
        histories = [study.history(strategy, seed) for seed in study.seeds]
        ratios = [f"{member} {np.mean([_gradient_ratio(h, member) for h in histories]):.2f}"
                  for member in study.members if f"grad_own.{member}" in histories[0]]
        if ratios:
            parts.append(f"`{strategy}`: {', '.join(ratios)}")
    if not parts:
        return ""
    return ("Gradient reaching each member's output from the fusion loss, relative to the member's own loss "
            f"(last epoch): {'; '.join(parts)}. Near 0, the ensemble barely trains that member; above 1, it "
            "trains it more than the member's own objective does.")


def discriminator_sentence(study: Study, rows: list[dict]) -> str:
    """Whether keeping the discriminator in the end-to-end loop matters: the first end-to-end row with it
    against the first without it."""
    with_d, without_d = _end_to_end(rows, discriminator=True), _end_to_end(rows, discriminator=False)
    if with_d is None or without_d is None:
        absent = "with" if with_d is None else "without"
        return f"Whether the discriminator matters is not tested here (no end-to-end run {absent} the discriminator)."
    delta = paired_delta(study, with_d["strategy"], without_d["strategy"])
    opening = {"helps": "The discriminator helps", "hurts": "The discriminator hurts",
               "neither helps nor hurts measurably": "The discriminator makes no measurable difference"}[effect(delta)]
    sentence = f"{opening}: `{with_d['strategy']}` vs `{without_d['strategy']}` is {_delta_words(delta)}"
    if with_d["diverged"] != without_d["diverged"]:
        sentence += (f"; {with_d['diverged']} of {with_d['runs']} runs diverged with it and "
                     f"{without_d['diverged']} of {without_d['runs']} without")
    return sentence + "."
