"""Extending seg_p2p: every registered member and combiner kind meets one contract (as smp's BaseModelTester:
a kind gets the whole contract by appearing in its registry), and a kind added from outside by one
registration goes through the whole study: train, predict, joint training, evaluate and the report."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import tiny_config, tiny_member, tiny_settings
from pydantic import PositiveInt
from torch import nn

from seg_p2p.cli import main
from seg_p2p.settings import MemberConfig
from seg_p2p.data.spec import IGNORE_INDEX, load_spec
from seg_p2p.device import Precision
from seg_p2p.engine import train_step
from seg_p2p.ensemble.combiners import FixedCombiner
from seg_p2p.ensemble.strategy import COMBINERS, CombinerKind, StrategyConfig, register_combiner
from seg_p2p.models import MEMBER_KINDS, build_member, parameter_counts, register_member
from seg_p2p.models.member import SegModel, adam_group

BUILT_IN_MEMBERS = list(MEMBER_KINDS)
BUILT_IN_COMBINERS = list(COMBINERS)


class TinyCNNConfig(MemberConfig):
    kind: Literal["tiny_cnn"] = "tiny_cnn"
    width: PositiveInt = 8


class TinyCNN(SegModel):
    """Two convolutions trained with cross-entropy: the smallest member a user could add."""

    def __init__(self, cfg: TinyCNNConfig, num_classes: int):
        super().__init__()
        self.cfg = cfg
        self.net = nn.Sequential(nn.Conv2d(3, cfg.width, 3, padding=1), nn.ReLU(), nn.Conv2d(cfg.width, num_classes, 1))

    def forward(self, batch):
        return self.net(batch["photo"])

    def probabilities(self, output):
        return output.float().softmax(1)

    def generator_losses(self, batch, output):
        return {"loss_ce": F.cross_entropy(output.float(), batch["mask"], ignore_index=IGNORE_INDEX)}

    def networks(self):
        return {"generator": self.net}

    def optimizer_groups(self):
        return {"generator": [adam_group(self.net, self.cfg.optimizer)]}


@pytest.fixture
def tiny_cnn_kind():
    register_member("tiny_cnn", TinyCNNConfig, lambda cfg, spec, size: TinyCNN(cfg, spec.num_classes))
    yield "tiny_cnn"
    del MEMBER_KINDS["tiny_cnn"]


@pytest.fixture
def median_kind():
    register_combiner("median", FixedCombiner(lambda probs: np.median(probs, 0)))
    yield "median"
    del COMBINERS["median"]


def batch(n=2, size=64, classes=8):
    generator = torch.Generator().manual_seed(0)
    return {"photo": torch.rand(n, 3, size, size, generator=generator) * 2 - 1,
            "mask": torch.randint(0, classes, (n, size, size), generator=generator), "index": torch.arange(n)}


# ---- the member contract ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", BUILT_IN_MEMBERS + ["tiny_cnn"])
def test_member_contract(kind, tiny_cnn_kind):
    torch.manual_seed(0)
    cfg = tiny_config(data={"load_size": 64, "crop_size": 64}, members={"m": tiny_member(kind)})
    spec = load_spec("synthetic")
    model = build_member(cfg, "m", spec)
    roles = model.networks()
    assert "generator" in roles and set(roles) <= {"generator", "discriminator"}
    counts = parameter_counts(model)
    assert sum(counts[role] for role in roles) == counts["training"]  # every parameter belongs to a role
    assert counts["inference"] == counts["training"] - counts.get("discriminator", 0)
    assert set(model.optimizer_groups()) == set(roles)

    data = batch(classes=spec.num_classes)
    model.train()
    output = model(data)
    probs = model.probabilities(output)
    assert probs.shape == (2, spec.num_classes, 64, 64)
    assert torch.allclose(probs.sum(1), torch.ones(2, 64, 64), atol=1e-5) and probs.min() >= 0
    losses = model.generator_losses(data, output)
    assert any(key.startswith("loss_") for key in losses) and all(v.isfinite() for v in losses.values())
    assert bool(model.discriminator_losses(data, output)) == ("discriminator" in roles)

    before = {role: [p.detach().clone() for p in net.parameters()] for role, net in roles.items()}
    train_step(model, data, model.optimizers(), Precision("fp32", torch.device("cpu")))
    for role, net in model.networks().items():
        assert any(not torch.equal(a, b) for a, b in zip(before[role], net.parameters())), f"{role} not updated"

    wrapped = []
    model.wrap_networks(lambda net: wrapped.append(nn.Sequential(net)) or wrapped[-1])
    assert list(model.networks().values()) == wrapped  # DDP reaches every network through this
    model.drop_discriminator()
    assert "discriminator" not in model.networks()
    assert model.discriminator_losses(data, model(data)) == {}
    model.eval()
    assert model.probabilities(model({"photo": data["photo"]})).shape == probs.shape  # inference needs no mask


# ---- the combiner contract -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", BUILT_IN_COMBINERS + ["median"])
def test_combiner_contract(name, median_kind):
    kind = COMBINERS[name]
    assert isinstance(kind, CombinerKind) and issubclass(kind.settings, StrategyConfig)
    strategy = kind.settings.model_validate({"combiner": name, "members": ["a", "b"]})
    fields = kind.report_fields(strategy)
    assert set(fields) == {"curves", "hypothesis"} and isinstance(fields["curves"], bool)
    if fields["hypothesis"] is not None:
        assert set(fields["hypothesis"]) == {"label", "role", "discriminator", "beta", "init", "balance"}
        assert fields["hypothesis"]["role"] in ("stacking", "control", "end_to_end")
    if isinstance(kind, FixedCombiner):
        probs = np.random.default_rng(0).dirichlet(np.ones(5), size=(3, 2, 4, 4)).transpose(0, 1, 4, 2, 3)
        scores = kind.combine(probs)
        assert scores.shape == (2, 5, 4, 4) and np.allclose(scores.sum(1), 1)


# ---- a kind added from outside runs through the whole study ---------------------------------------------------

def write_study(root, params: dict, strategies: dict[str, dict]) -> list[str]:
    (root / "ensembles").mkdir(parents=True)
    for name, content in strategies.items():
        (root / "ensembles" / f"{name}.yaml").write_text(yaml.safe_dump(content))
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return ["--params", str(root / "params.yaml")]


def run_study(root, base: list[str], members: list[str], strategies: list[str]) -> str:
    """Every stage, in-process, as dvc.yaml runs them for one seed; returns conclusion.md."""
    runs = root / "runs" / "seed0"
    main([*base, "prepare", "--out", str(root / "data")])
    for member in members:
        out = runs / "members" / member
        main([*base, "train", "--member", member, "--data", str(root / "data"), "--out", str(out / "train")])
        main([*base, "predict", "--member", member, "--data", str(root / "data"), "--checkpoint",
              str(out / "train" / "checkpoints" / "best.pt"), "--out", str(out / "predict"), "--split", "val",
              "--split", "test"])
    main([*base, "ensemble", *(arg for s in strategies for arg in ("--strategy", s)), "--data", str(root / "data"),
          "--runs", str(runs / "members"), "--out", str(runs / "ensembles"), "--strategies-dir",
          str(root / "ensembles")])
    main([*base, "evaluate", "--data", str(root / "data"), "--runs", str(runs), "--out", str(runs / "evaluate"),
          "--strategies-dir", str(root / "ensembles")])
    main([*base, "report", "--data", str(root / "data"), "--runs", str(root / "runs"), "--out",
          str(root / "report")])
    return (root / "report" / "conclusion.md").read_text()


def test_a_registered_member_and_combiner_go_through_the_whole_study(tmp_path, monkeypatch, tiny_cnn_kind,
                                                                     median_kind):
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)  # the study's project folder, as DVC runs its stages: its ensembles/ holds `median`
    params = tiny_settings({"name": "extended", "strategies": ["median", "learned", "joint"]})
    params["members"] = {"pix2pix": params["members"]["pix2pix"], "tiny_cnn": tiny_member("tiny_cnn")}
    params["strategy_settings"] = {}  # params.yaml's budgets name strategies this study's ensembles/ lacks
    params["gan_pairs"] = {}  # and its 2 x 2 pairs members this study lacks
    params["reference"] = None  # the budget-matched network has its own tests (test_budget, test_pipeline)
    fusion = {"hidden": 8, "layers": 2}
    strategies = {"median": {"combiner": "median"},  # members omitted: all of them
                  "learned": {"combiner": "learned", "fusion": fusion, "n_epochs": 2, "n_epochs_decay": 0},
                  "joint": {"combiner": "joint", "init": "members", "fusion": fusion, "n_epochs": 1,
                            "n_epochs_decay": 0}}
    base = write_study(tmp_path, params, strategies)
    conclusion = run_study(tmp_path, base, ["pix2pix", "tiny_cnn"], ["median", "learned", "joint"])

    tables = {section.split("\n", 1)[0]: section for section in conclusion.split("\n## ")}
    members_table = next(text for title, text in tables.items() if title.startswith("1."))
    ensembles_table = next(text for title, text in tables.items() if title.startswith("2."))
    hypothesis_table = next(text for title, text in tables.items() if title.startswith("3."))
    assert "| tiny_cnn" in members_table
    assert "| median" in ensembles_table and "pix2pix, tiny_cnn" in ensembles_table
    assert "| joint" in hypothesis_table and "| learned" in hypothesis_table
    history = (tmp_path / "runs" / "seed0" / "ensembles" / "joint" / "train" / "history.csv").read_text()
    assert "grad_fusion.tiny_cnn" in history and "loss_ce.tiny_cnn" in history  # trained end-to-end in joint
