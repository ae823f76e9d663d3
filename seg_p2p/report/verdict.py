"""The verdict in words, generated from the same numbers and intervals as the tables.

Sentences are built here rather than written by hand so the words can never disagree with the tables. The verdict
answers in five parts: (a) can the adversarial members be trained end-to-end at all, (b) does it pay against the
compute-matched control, (c) what the discriminator does, (d) whether the adversarial member adds to the ensemble
(leave-one-out), (e) whether ensembling pays at all (seg_p2p.report.ensembling); beside it, what the GAN term does
on each supervision path (the members' 2 x 2) and what end-to-end training does to each member scored alone. Which
run answers which part is read from the rows' roles (stacking, control, end_to_end; beta, discriminator, init) and
member lists, never from strategy names.
"""

from __future__ import annotations

from seg_p2p.report.numbers import fmt, paired_delta, resolution
from seg_p2p.report.study import Study

MIN_SEEDS = 3  # fewer seeds than this and no difference is called: the verdict says "not conclusive"


def subject(study: Study) -> str:
    """Who the end-to-end question is about: the adversarially trained members (pix2pix and unet_ce_adv today)."""
    named = [m for m in study.members if study.evals[m][0]["params"]["discriminator"] > 0]
    return " and ".join(named) if named else "the members"


def delta_words(delta: dict) -> str:
    excludes = delta["low"] > 0 or delta["high"] < 0
    return (f"{delta['delta']:+.3f} mIoU (95% interval [{delta['low']:+.3f}, {delta['high']:+.3f}] "
            f"{'excludes' if excludes else 'includes'} 0)")


def effect(delta: dict) -> str:
    """'helps', 'hurts' or 'is not conclusive (why)': by the interval, never with fewer than MIN_SEEDS seeds."""
    if delta["seeds"] < MIN_SEEDS:
        seeds = f"{delta['seeds']} seed{'s' if delta['seeds'] != 1 else ''}"
        return f"is not conclusive ({seeds}; a verdict needs at least {MIN_SEEDS})"
    if delta["low"] > 0:
        return "helps"
    if delta["high"] < 0:
        return "hurts"
    detectable, seeds = resolution(delta)
    needed = (f"about {seeds} seeds would resolve its {delta['delta']:+.3f}" if seeds is not None
              else "no number of seeds resolves a Δ of 0")
    return f"is not conclusive (the interval includes 0; this study resolves |Δ| ≥ {detectable:.3f}, {needed})"


def answer(effect_words: str, helps: str = "Yes", hurts: str = "No, it hurts") -> str:
    return {"helps": helps, "hurts": hurts}.get(effect_words, "Not conclusive")


def _describe(row: dict) -> str:
    init = "from scratch" if row["init"] == "scratch" else "fine-tuned"
    return f"`{row['strategy']}` (β = {row['beta']:g}, {'with' if row['discriminator'] else 'no'} D, {init})"


def principal_run(rows: list[dict]) -> dict | None:
    """The end-to-end run the question is about: the first one that keeps the discriminator and has a control,
    fine-tuned before from scratch."""
    widest = max((len(r["members"]) for r in rows), default=0)  # every member: not a leave-one-out run
    candidates = [r for r in rows if r["role"] == "end_to_end" and r["discriminator"] and r["control"]
                  and len(r["members"]) == widest]
    return next((r for r in candidates if r["init"] == "members"), candidates[0] if candidates else None)


def trainability(rows: list[dict]) -> dict | None:
    """(a)'s numbers: over every end-to-end run that keeps the discriminator (all seeds), how many runs, diverged,
    not recorded and collapsed; None when there is no such run."""
    runs = [r for r in rows if r["role"] == "end_to_end" and r["discriminator"]]
    if not runs:
        return None
    return {"names": [r["strategy"] for r in runs], **{key: sum(r[key] for r in runs)
                                                        for key in ("runs", "diverged", "unrecorded", "collapsed")}}


def trainable_sentence(rows: list[dict], subject: str) -> str:
    """(a): over every end-to-end run that keeps the discriminator (all seeds), how many diverged or collapsed."""
    counts = trainability(rows)
    if counts is None:
        return (f"(a) Is it trainable? Not tested: this study has no end-to-end run with the discriminator in the "
                f"loop, so it does not say whether {subject} can be trained end-to-end.")
    n, k, collapsed = counts["runs"], counts["diverged"], counts["collapsed"]
    names = ", ".join(f"`{name}`" for name in counts["names"])
    opening = "Yes" if k == 0 else ("No" if k == n else "Only unreliably")
    were, its = ("were", "their discriminators") if " and " in subject else ("was", "its discriminator")
    sentence = (f"(a) Is it trainable? {opening}: {subject} {were} trained end-to-end with the other networks, {its} "
                f"in the loop, in {n} runs ({names}, every seed); {k} diverged")
    if counts["unrecorded"]:
        sentence += f" ({counts['unrecorded']} not recorded)"
    sentence += (f", and the discriminator collapsed (loss < 1e-3 for the patience window) in {collapsed}."
                 if collapsed else ", and no discriminator collapsed.")
    return sentence


def pays_sentence(rows: list[dict]) -> str:
    """(b): the principal end-to-end run against its compute-matched control, the other end-to-end runs after it,
    and the control against frozen stacking (what more training alone does)."""
    principal = principal_run(rows)
    if principal is None:
        return ("(b) Does end-to-end training pay? Not tested: no end-to-end run with the discriminator has a "
                "compute-matched control (a beta = 0 run with the same init) in this study.")
    delta = principal["delta_control"]
    words = effect(delta)
    sentence = (f"(b) Does end-to-end training pay against the control? {answer(words)}: {_describe(principal)} "
                f"vs `{principal['control']}` (β = 0: the same loop, epochs and batches, no gradient from the "
                f"fusion loss into the members) is {delta_words(delta)} over {delta['seeds']} seeds, so end-to-end "
                f"training {words}.")
    others = [r for r in rows if r["role"] == "end_to_end" and r is not principal]
    parts = [f"{_describe(r)} vs `{r['control']}`: {delta_words(r['delta_control'])}, so it "
             f"{effect(r['delta_control'])}" if r["delta_control"] else
             f"{_describe(r)}: no compute-matched control in this study (add a β = 0 run with init {r['init']})"
             for r in others]
    if parts:
        sentence += " Against their controls: " + "; ".join(parts) + "."
    control = next((r for r in rows if r["strategy"] == principal["control"]), None)
    if control and control["delta_stacking"]:
        sentence += (f" More training alone (`{control['strategy']}` vs `{control['stacking']}`, frozen stacking): "
                     f"{delta_words(control['delta_stacking'])}, so it {effect(control['delta_stacking'])}.")
    return sentence


def discriminator_pair(study: Study, rows: list[dict]) -> dict | None:
    """(c)'s numbers: the principal run, the same training without the discriminator, and their paired Δ; None when
    the study has no such pair."""
    with_d = principal_run(rows) or next((r for r in rows if r["role"] == "end_to_end" and r["discriminator"]), None)
    without_d = with_d and next((r for r in rows if r["role"] == "end_to_end" and not r["discriminator"]
                                 and r["beta"] == with_d["beta"] and r["init"] == with_d["init"]
                                 and set(r["members"]) == set(with_d["members"])), None)
    if without_d is None:
        return None
    return {"with": with_d, "without": without_d,
            "delta": paired_delta(study, with_d["strategy"], without_d["strategy"])}


def discriminator_sentence(pair: dict | None, subject: str) -> str:
    """(c): the principal run against the same training without the discriminator (discriminator_pair), and how much
    of the adversarial member's gradient the ensemble supplies."""
    if pair is None:
        return ("(c) What does the discriminator do? Not tested: no end-to-end pair with and without the "
                "discriminator at the same β and init in this study.")
    with_d, without_d, delta = pair["with"], pair["without"], pair["delta"]
    words = effect(delta)
    opening = answer(words, "It helps", "It hurts")
    sentence = (f"(c) What does the discriminator do? {opening}: {_describe(with_d)} vs `{without_d['strategy']}` "
                f"is {delta_words(delta)}, so keeping it {words}")
    if with_d["diverged"] != without_d["diverged"]:
        sentence += (f"; {with_d['diverged']} of {with_d['runs']} runs diverged with it and "
                     f"{without_d['diverged']} of {without_d['runs']} without")
    shares = (with_d["signals"] or {}).get("fusion_share", {})
    named = [m for m in subject.split(", ") if m in shares]
    if named:
        sentence += (". The fusion loss supplies " + ", ".join(f"{fmt(shares[m], digits=2)} of the gradient norm "
                                                               f"reaching {m}'s output" for m in named)
                     + f" in `{with_d['strategy']}` (its own GAN and L1 terms the rest)")
    return sentence + "."


def diversity_sentence(rows: list[dict]) -> str:
    """The collusion signal of the principal run: diversity on the monitored training images against val."""
    principal = principal_run(rows)
    diversity = ((principal or {}).get("signals") or {}).get("diversity", {})
    if "train" not in diversity or "val" not in diversity:
        return ""
    (train_first, train_last), (val_first, val_last) = diversity["train"], diversity["val"]
    return (f"Diversity (share of pixels where two members' labels differ, mean over pairs and seeds) in "
            f"`{principal['strategy']}`: {train_first:.3f} → {train_last:.3f} on training images, "
            f"{val_first:.3f} → {val_last:.3f} on val, first to last epoch. Members that collude to fit the "
            "training images raise it there but not on val (Jeffares et al. 2023).")


def leading_first(pairs: list[dict]) -> list[dict]:
    """Leave-one-out pairs in the order (d) reports them: end-to-end with the discriminator, fine-tuned, first."""
    return sorted(pairs, key=lambda p: (p["role"] != "end_to_end", not p["discriminator"], p["init"] != "members"))


def adds_sentence(pairs: list[dict]) -> str:
    """(d): the full ensemble against the same training without one adversarial member (contributions.leave_one_out):
    the end-to-end pair with the discriminator leads, fine-tuned before from scratch; the other pairs follow."""
    if not pairs:
        return ("(d) Does the adversarial member add to the ensemble? Not tested: no strategy trains the same ensemble "
                "without one adversarial member (a leave-one-out strategy: the same file with `members:` lacking it).")
    lead, *others = leading_first(pairs)
    words = effect(lead["delta"])
    sentence = (f"(d) Does {lead['member']} add to the ensemble? {answer(words)}: `{lead['full']}` vs "
                f"`{lead['without']}` (the same training, {lead['label']}, without {lead['member']}) is "
                f"{delta_words(lead['delta'])} over {lead['delta']['seeds']} seeds, so {lead['member']} {words}.")
    if others:
        sentence += " The other pairs: " + "; ".join(
            f"`{p['full']}` vs `{p['without']}` ({p['label']}): {delta_words(p['delta'])}, so {p['member']} "
            f"{effect(p['delta'])}" for p in others) + "."
    return sentence


def gan_sentence(pairs: list[dict]) -> str:
    """What the GAN term does on each supervision path of the members' 2 x 2 (contributions.gan_pairs)."""
    parts = [f"on the {p['supervision']} path, `{p['gan']}` vs `{p['plain']}` is {delta_words(p['delta'])}, so the "
             f"GAN term {effect(p['delta'])}" for p in pairs if p["delta"]]
    if not parts:
        return ("What the GAN term does is not measured here: no pair of `gan_pairs` (an adversarial member and the "
                "member it adds the GAN term to) is in the study.")
    return "What the GAN term does, member against member trained alike without it: " + "; ".join(parts) + "."


def inside_sentence(entries: list[dict], rows: list[dict], subject: str) -> str:
    """What the principal end-to-end run did to the adversarial members as segmenters on their own."""
    principal = principal_run(rows)
    named = [e for e in entries if principal and e["strategy"] == principal["strategy"]
             and e["member"] in subject.split(" and ")]
    parts = []
    for e in named:
        part = (f"{e['member']} scores {fmt(e['inside'][0])} alone from `{e['strategy']}`'s weights against "
                f"{fmt(e['alone'][0])} trained on its own, {delta_words(e['delta_alone'])}: "
                f"{_as_segmenter(e['delta_alone'])}")
        if e["delta_control"]:
            part += (f"; against {fmt(e['in_control'][0])} inside its control `{e['control']}` (the same training "
                     f"without the fusion loss's gradient) {delta_words(e['delta_control'])}: "
                     f"{_as_segmenter(e['delta_control'])}")
        parts.append(part)
    return ("Scored on their own: " + "; and ".join(parts) + ".") if parts else ""


def _as_segmenter(delta: dict) -> str:
    words = effect(delta)
    return {"helps": "a better segmenter", "hurts": "a worse segmenter"}.get(words, f"as a segmenter, {words}")
