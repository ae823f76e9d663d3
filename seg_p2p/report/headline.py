"""The headline that opens conclusion.md: at most five sentences, one per part of the verdict with its number, for
a reader to paste into an abstract.

Built from the same counts, rows, pairs and deltas as the long sentences (never by reading those back), so the two
cannot disagree; parts this study does not test share one closing sentence.
"""

from __future__ import annotations

from seg_p2p.report.verdict import effect, leading_first, principal_run, trainability


def short(delta: dict) -> str:
    """A Δ and its interval in a few words, 'not conclusive' where the verdict calls no difference."""
    called = effect(delta) in ("helps", "hurts")
    return (f"{delta['delta']:+.3f} mIoU [95%: {delta['low']:+.3f}, {delta['high']:+.3f}]"
            + ("" if called else ", not conclusive"))


def _trainable(rows: list[dict], subject: str) -> str | None:
    counts = trainability(rows)
    if counts is None:
        return None
    collapsed = f" and the discriminator collapsed in {counts['collapsed']}" if counts["collapsed"] else ""
    return (f"Trained end-to-end with the discriminator in the loop, {subject} diverged in {counts['diverged']} of "
            f"{counts['runs']} runs{collapsed}.")


def _pays(rows: list[dict]) -> str | None:
    principal = principal_run(rows)
    if principal is None:
        return None
    return (f"End-to-end training (`{principal['strategy']}`) against its compute-matched control "
            f"(`{principal['control']}`): {short(principal['delta_control'])}.")


def _discriminator(pair: dict | None) -> str | None:
    if pair is None:
        return None
    return (f"Keeping the discriminator (`{pair['with']['strategy']}` vs `{pair['without']['strategy']}`): "
            f"{short(pair['delta'])}.")


def _adds(pairs: list[dict]) -> str | None:
    if not pairs:
        return None
    lead = leading_first(pairs)[0]
    return f"Adding {lead['member']} to the ensemble (`{lead['full']}` vs `{lead['without']}`): {short(lead['delta'])}."


def _ensembling(found: dict) -> str | None:
    if found["untested"]:
        return None
    sentence = (f"The best ensemble on val against the best member on val (`{found['ensemble']}` vs "
                f"`{found['member']}`): {short(found['delta_member'])}")
    if found["reference"]:
        sentence += (f"; against one network with the ensemble's budget (`{found['reference']}`): "
                     f"{short(found['delta_reference'])}")
    return sentence + "."


def headline(rows: list[dict], subject: str, discriminator: dict | None, leave_one_out: list[dict],
             ensembling: dict) -> str:
    """Parts (a) to (e) in one short sentence each; the untested ones named together in a last sentence."""
    parts = [(_trainable(rows, subject), "end-to-end training with the discriminator"),
             (_pays(rows), "a compute-matched control"), (_discriminator(discriminator), "the discriminator's effect"),
             (_adds(leave_one_out), "leave-one-out"), (_ensembling(ensembling), "whether ensembling pays")]
    sentences = [sentence for sentence, _ in parts if sentence]
    untested = [topic for sentence, topic in parts if not sentence]
    if untested:
        sentences.append(f"Not tested here: {', '.join(untested)}.")
    return " ".join(sentences)
