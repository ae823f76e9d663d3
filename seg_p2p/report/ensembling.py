"""Part (e) of the verdict: does ensembling pay at all, against the best member and against one network as large.

"Best" is picked on val, never on test: the model that scores highest on the test images is partly the luckiest
there, so comparing test scores of test-picked models biases the difference upward. A strategy fitted on val
(stacking) has an in-sample val score and is no candidate, nor is one that wrote no val predictions. The
reference network (params.yaml's `reference:`, seg_p2p.budget) has the ensemble's inference parameters and
training FLOPs, so a difference against it is what combining several networks buys over spending the same on one.
"""

from __future__ import annotations

from seg_p2p.report.numbers import mean_std, paired_delta
from seg_p2p.report.study import Study
from seg_p2p.report.verdict import answer, delta_words, effect


def best_on_val(study: Study, models: list[str]) -> str | None:
    """The model with the highest mean val mIoU over seeds; None when none recorded one."""
    scored = [m for m in models if study.values(m, "val_miou")]
    return max(scored, key=lambda m: mean_std(study.values(m, "val_miou"))[0], default=None)


def no_candidates(study: Study) -> dict[str, list[str]]:
    """The strategies that cannot be the best ensemble, by why: no val score, or a val score they were fitted on."""
    fitted = [s for s in study.strategies if any(record["val_in_sample"] for record in study.evals[s])]
    unscored = [s for s in study.strategies if s not in fitted and not study.values(s, "val_miou")]
    return {"no val score": unscored, "fitted on val": fitted}


def ensembling_comparison(study: Study) -> dict:
    """(e)'s numbers: the best ensemble and the best member on val, the best ensemble's paired test Δ against that
    member and against the reference network (None where the study has none), or `untested`: why not."""
    excluded = no_candidates(study)
    candidates = [s for s in study.strategies if not any(s in names for names in excluded.values())]
    found = {"excluded": excluded, "ensemble": best_on_val(study, candidates),
             "member": best_on_val(study, study.members), "reference": None, "budget": None, "delta_member": None,
             "delta_reference": None, "untested": None}
    if not study.strategies:
        return found | {"untested": "this study has no ensemble strategy"}
    if found["member"] is None:
        return found | {"untested": "no val scores recorded (rerun evaluate)"}
    if found["ensemble"] is None:
        return found | {"untested": "no strategy has a val score it was not fitted on"}
    found["delta_member"] = paired_delta(study, found["ensemble"], found["member"])
    reference = study.references[0] if study.references else None  # params.yaml's `reference:`
    if reference is not None:
        found |= {"reference": reference, "budget": study.budget(reference),
                  "delta_reference": paired_delta(study, found["ensemble"], reference)}
    return found


def _excluded_words(excluded: dict[str, list[str]]) -> str:
    names = [f"`{name}` ({why})" for why, found in excluded.items() for name in found]
    return f" Not candidates for the best ensemble: {', '.join(names)}." if names else ""


def _budget_words(reference: str, budget: dict) -> str:
    return (f"`{reference}`: {budget['inference_params'] / 1e6:.1f}M parameters against the ensemble's "
            f"{budget['ensemble_inference_params'] / 1e6:.1f}M, "
            f"{budget['train_flops'] / budget['ensemble_train_flops']:.2f}× its members' training FLOPs")


def ensembling_sentence(found: dict) -> str:
    """(e) in words, from ensembling_comparison."""
    if found["untested"]:
        return f"(e) Does ensembling pay? Not tested: {found['untested']}.{_excluded_words(found['excluded'])}"
    delta = found["delta_member"]
    words = effect(delta)
    sentence = (f"(e) Does ensembling pay? {answer(words)}: the best ensemble on val, `{found['ensemble']}`, vs the "
                f"best member on val, `{found['member']}`, is {delta_words(delta)} over {delta['seeds']} seeds, so "
                f"ensembling {words}")
    if found["reference"] is None:
        sentence += ("; against one network with the ensemble's budget it is not tested: no budget-matched network "
                     "in this study (`reference:` in params.yaml).")
    else:
        against = found["delta_reference"]
        sentence += (f"; against one network with the ensemble's budget "
                     f"({_budget_words(found['reference'], found['budget'])}) it is {delta_words(against)}, so "
                     f"ensembling {effect(against)}.")
    return sentence + _excluded_words(found["excluded"])
