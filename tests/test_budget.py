"""The budget-matched reference (seg_p2p.budget): one network with the ensemble's inference parameters and its members'
training FLOPs, trained and scored as a member is, the input of no strategy."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import REPO, read_history, tiny_config, tiny_params, train_argv

from seg_p2p.budget import MAX_MISMATCH, reference_budget
from seg_p2p.cli import main
from seg_p2p.config import load_config
from seg_p2p.data.spec import load_spec
from seg_p2p.ensemble.strategy import load_strategy
from seg_p2p.errors import UserError


def printed_params(capsys, *experiment: str) -> dict:
    main(["--params", str(REPO / "params.yaml"), "params", *experiment])
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("experiment", [(), ("--experiment", str(REPO / "experiments" / "facades-256-paper.yaml"))],
                         ids=["default", "facades-256-paper"])
def test_seg_p2p_params_prints_the_reference_budget_beside_the_ensembles_within_ten_percent(capsys, experiment):
    printed = printed_params(capsys, *experiment)
    budget, members = printed["reference"], ("pix2pix", "unet_l1", "unet_ce", "unet_ce_adv")
    assert budget["ensemble"] == list(members)
    # the ensemble's side is the members' own counts, as `seg-p2p params` prints them for each member
    assert budget["ensemble_inference_params"] == sum(printed[m]["inference"] for m in members)
    assert abs(budget["inference_params"] / budget["ensemble_inference_params"] - 1) <= MAX_MISMATCH
    trained = sum(budget["epochs"]) * budget["step_flops"]
    assert abs(trained / (budget["ensemble_epochs"] * budget["ensemble_step_flops"]) - 1) <= MAX_MISMATCH
    assert budget["matched"] and budget["width"] > 1  # wider than the unet_ce member it is built like


def test_the_members_epochs_split_into_constant_and_decay_as_theirs_do():
    cfg = tiny_config(train={"n_epochs": 6, "n_epochs_decay": 2})
    budget = reference_budget(cfg, load_spec("synthetic"))
    constant, decay = budget.epochs
    assert constant + decay == round(8 * budget.ensemble_step_flops / budget.step_flops)
    assert constant == round((constant + decay) * 6 / 8)


def test_width_one_is_the_unet_ce_member_as_it_was():
    """The knob leaves every existing member as it was: smp's own default decoder."""
    import segmentation_models_pytorch as smp
    import torch

    from seg_p2p.models import build_member, parameter_counts

    cfg, spec = tiny_config(), load_spec("synthetic")
    with torch.device("meta"):
        plain = smp.Unet(cfg.members["unet_ce"].encoder, encoder_weights=None, classes=spec.num_classes)
        member = build_member(cfg, "unet_ce", spec)
    assert parameter_counts(member)["inference"] == sum(p.numel() for p in plain.parameters())


def test_no_strategy_takes_the_reference_as_an_input(tmp_path):
    cfg = load_config(REPO / "params.yaml")
    assert cfg.reference is not None
    for name in cfg.strategies:
        assert "reference" not in load_strategy(cfg, name, REPO / "ensembles").members
    (tmp_path / "mean.yaml").write_text(yaml.safe_dump({"combiner": "mean", "members": ["unet_ce", "reference"]}))
    with pytest.raises(UserError, match="members: 'reference' is not a member"):
        load_strategy(cfg, "mean", tmp_path)


def test_the_reference_trains_for_its_budgets_epochs(workspace, tmp_path):
    out = tmp_path / "reference" / "train"
    main(train_argv(workspace, out, member="reference"))
    cfg = load_config(workspace / "params.yaml")
    budget = reference_budget(cfg, load_spec("synthetic"))
    assert len(read_history(out / "history.csv")) == sum(budget.epochs)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_val_miou"] is not None


def test_a_study_without_a_reference_says_so_in_the_stages_folder(workspace, tmp_path):
    params = tiny_params(tmp_path, {"reference": None})
    for argv in (train_argv(workspace, tmp_path / "train", member="reference", params=params),
                 ["--params", str(params), "predict", "--member", "reference", "--data", str(workspace / "data"),
                  "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "predict"), "--split", "test"]):
        main(argv)
    for folder in ("train", "predict"):
        assert json.loads((tmp_path / folder / "none.json").read_text())["reference"] is None
