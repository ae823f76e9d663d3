"""Ensemble strategies: hand-computed fixed combiners, stacking that learns, joint training that trains all."""

import numpy as np
import pytest
import torch
from conftest import tiny_config

from seg_p2p.device import Precision
from seg_p2p.engine import TrainingRun, fit, train_step
from seg_p2p.ensemble.fusion import FusionConfig, JointEnsemble, ProbabilityDataset, StackingModel
from seg_p2p.ensemble.strategy import COMBINERS, load_strategy
from seg_p2p.ensemble.trained import JointConfig, StackingConfig
from seg_p2p.errors import UserError
from seg_p2p.models import build_member
from seg_p2p.tracking import Tracker

PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]], np.uint8)


class Spec:
    palette = PALETTE
    num_classes = 3


def pixel(*probs):
    """Member probabilities for a single pixel: (M, 1, C, 1, 1)."""
    return np.array(probs, np.float32)[:, None, :, None, None]


def combine(name, probs):
    return COMBINERS[name].combine(probs)


def labels(name, probs):
    return combine(name, probs).argmax(1).ravel().tolist()


def test_fixed_combiners_match_hand_computed_labels():
    # member A is sure of class 0 (0.9); members B and C mildly prefer class 1 (0.6) over class 2 (0.4).
    probs = pixel([0.9, 0.05, 0.05], [0.0, 0.6, 0.4], [0.0, 0.6, 0.4])
    assert labels("max", probs) == [0]  # max: 0.9 for class 0
    assert labels("mean", probs) == [1]  # mean: 0.30, 0.42, 0.28
    assert labels("vote", probs) == [1]  # two votes for 1
    assert labels("min", probs) == [1]  # min: 0.0, 0.05, 0.05: a tie, broken to the lowest index
    scores = combine("min", probs).ravel()
    np.testing.assert_allclose(scores, [0.0, 0.5, 0.5])


def test_combined_scores_are_probabilities():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=(3, 2, 5, 5)).transpose(0, 1, 4, 2, 3).astype(np.float32)
    for name in ("max", "min", "mean", "vote"):
        np.testing.assert_allclose(combine(name, probs).sum(1), 1.0, rtol=1e-5)


def toy_config(**train):
    """conftest's tiny config for one epoch (plus `train`), generators without dropout."""
    generator = {"dropout": 0.0}
    return tiny_config(train={"n_epochs": 1, "n_epochs_decay": 0, **train},
                       members={"pix2pix": {"generator": generator}, "unet_l1": {"generator": generator}})


class ToyImages(torch.utils.data.Dataset):
    """Masks in three vertical bands; photos that show them; enough for members and fusion to learn."""

    def __init__(self, n=8, size=32, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.mask = torch.zeros(n, size, size, dtype=torch.long)
        for i in range(n):
            cut = int(torch.randint(8, 24, (1,), generator=g))
            self.mask[i, :, cut:] = 1
            self.mask[i, size // 2:, cut:] = 2
        self.photo = torch.tensor(PALETTE, dtype=torch.float32)[self.mask].permute(0, 3, 1, 2) / 127.5 - 1
        self.photo += 0.2 * torch.randn(self.photo.shape, generator=g)

    def __len__(self):
        return len(self.mask)

    def set_epoch(self, epoch):
        pass

    def __getitem__(self, i):
        return {"photo": self.photo[i], "mask": self.mask[i], "index": i}


def test_learned_combiner_beats_the_mean_when_one_member_is_always_wrong_on_one_class(tmp_path):
    """Member B calls every class-2 pixel class 1 with confidence; the mean follows it, stacking learns not to."""
    train, test = ToyImages(16, seed=1), ToyImages(8, seed=2)

    def member_probs(dataset):
        onehot = torch.nn.functional.one_hot(dataset.mask, 3).permute(0, 3, 1, 2).float()
        a = 0.45 * onehot + 0.55 / 3  # right, but unsure
        wrong = dataset.mask.clone()
        wrong[wrong == 2] = 1
        b = 0.95 * torch.nn.functional.one_hot(wrong, 3).permute(0, 3, 1, 2).float() + 0.05 / 3
        return [a.numpy(), b.numpy()]

    cfg = toy_config(n_epochs=30, batch_size=8)
    model = StackingModel(2, 3, FusionConfig(hidden=8, layers=2, lr=0.05))
    with Tracker(cfg, "test/stacking", {}) as tracker:
        fit(model, ProbabilityDataset(member_probs(train), train), None,
            TrainingRun(cfg.train, 0, tmp_path, tracker, "toy", PALETTE, 3, None))
    probs_test = member_probs(test)
    mean_pred = combine("mean", np.stack(probs_test)).argmax(1)
    model.eval()
    with torch.no_grad():
        fused = model({"probs": torch.from_numpy(np.stack(probs_test, 1)), "photo": test.photo}).argmax(1)
    truth = test.mask.numpy()
    assert (fused.numpy() == truth).mean() > 0.95
    assert (mean_pred == truth).mean() < 0.8


@pytest.mark.parametrize("discriminator", [True, False])
def test_joint_training_updates_every_member_and_the_discriminator(discriminator):
    torch.manual_seed(0)
    cfg = toy_config()
    members = {name: build_member(cfg, name, Spec) for name in cfg.members}
    joint = JointEnsemble(members, 3, FusionConfig(hidden=8, layers=2), discriminator, 0.5, "none", 0.01)
    optimizers = joint.optimizers()
    assert ("discriminator" in optimizers) == discriminator
    d_before = [p.clone() for p in members["pix2pix"].discriminator.parameters()] if discriminator else []
    generators = {name: m.networks()["generator"] for name, m in members.items()}
    before = {name: [p.clone() for p in net.parameters()] for name, net in generators.items()}
    dataset = ToyImages(4)
    batch = {"photo": dataset.photo, "mask": dataset.mask}
    precision = Precision("fp32", torch.device("cpu"))
    stats = train_step(joint, batch, optimizers, precision)  # the first step measures the gradient norms
    # and a second: timm's ResNets (unet_ce's tu-resnet10t) start each block's last BatchNorm at zero, so the
    # block's other weights get no gradient until the first step has moved that scale
    train_step(joint, batch, optimizers, precision)
    for name, member in members.items():
        changed = [not torch.equal(a, b) for a, b in zip(before[name], generators[name].parameters())]
        assert sum(changed) > 0.9 * len(changed), name
        assert stats[f"grad_fusion.{name}"] > 0 and stats[f"grad_own.{name}"] > 0, name
    # measured at each member's own output, so the norms tell the members apart
    assert len({round(float(stats[f"grad_fusion.{name}"]), 6) for name in members}) == len(members)
    assert ("loss_g_gan.pix2pix" in stats) == discriminator
    if discriminator:
        assert {"loss_d.pix2pix", "d_real.pix2pix", "d_fake.pix2pix"} <= set(stats)
        assert all(not torch.equal(a, b) for a, b in zip(d_before, members["pix2pix"].discriminator.parameters()))
    counts = {role: sum(p.numel() for p in net.parameters()) for role, net in joint.networks().items()}
    assert ("discriminator" in counts) == discriminator


def test_strategy_files_are_checked(tmp_path):
    cfg = toy_config()
    (tmp_path / "bad.yaml").write_text("combiner: max\nmembers: [pix2pix, nobody]\n")
    with pytest.raises(UserError, match="nobody"):
        load_strategy(cfg, "bad", tmp_path)
    (tmp_path / "typo.yaml").write_text("combiner: max\nmembers: [pix2pix]\nfuson: {}\n")
    with pytest.raises(UserError, match="unknown key 'fuson'"):
        load_strategy(cfg, "typo", tmp_path)
    with pytest.raises(UserError, match="no such strategy"):
        load_strategy(cfg, "absent", tmp_path)
    (tmp_path / "median.yaml").write_text("combiner: median\n")
    with pytest.raises(UserError) as error:
        load_strategy(cfg, "median", tmp_path)
    assert str(error.value) == (f"{tmp_path / 'median.yaml'}: combiner: 'median' is not a combiner kind; "
                                "use one of max, min, mean, vote, learned, joint")


def test_strategy_members_default_to_every_member_and_kinds_bring_their_settings(tmp_path):
    cfg = toy_config()
    (tmp_path / "all.yaml").write_text("combiner: mean\n")
    assert load_strategy(cfg, "all", tmp_path).members == list(cfg.members)  # params.yaml's four
    (tmp_path / "stack.yaml").write_text("combiner: learned\nmembers: [unet_l1]\nfusion: {hidden: 4}\n")
    stack = load_strategy(cfg, "stack", tmp_path)
    assert isinstance(stack, StackingConfig) and stack.fusion.hidden == 4 and stack.members == ["unet_l1"]
    (tmp_path / "both.yaml").write_text("combiner: joint\ndiscriminator: false\n")
    joint = load_strategy(cfg, "both", tmp_path)
    assert isinstance(joint, JointConfig) and joint.discriminator is False
    (tmp_path / "fixed.yaml").write_text("combiner: max\ndiscriminator: false\n")
    with pytest.raises(UserError, match="unknown key 'discriminator'"):
        load_strategy(cfg, "fixed", tmp_path)


def test_a_strategy_holds_only_what_it_changes_from_its_base(tmp_path):
    cfg = toy_config()
    (tmp_path / "joint.yaml").write_text("combiner: joint\nbeta: 0.5\nfusion: {hidden: 8, layers: 2}\nn_epochs: 1\n")
    (tmp_path / "control.yaml").write_text("base: joint\nbeta: 0\nfusion: {hidden: 4}\n")
    (tmp_path / "variant.yaml").write_text("base: control\ninit: scratch\nn_epochs: 2\n")
    strategy = load_strategy(cfg, "variant", tmp_path)  # the base's base first, each file laid over it
    assert (strategy.beta, strategy.init, strategy.n_epochs) == (0, "scratch", 2)
    assert (strategy.fusion.hidden, strategy.fusion.layers) == (4, 2)  # nested settings merge
    (tmp_path / "orphan.yaml").write_text("base: nobody\nbeta: 0\n")
    with pytest.raises(UserError, match=r"orphan.yaml: base: 'nobody' is not a strategy of .* fix the name$"):
        load_strategy(cfg, "orphan", tmp_path)
    (tmp_path / "a.yaml").write_text("base: b\n")
    (tmp_path / "b.yaml").write_text("base: a\n")
    with pytest.raises(UserError, match=r"base: 'a' leads back to itself \(a -> b -> a\)") as error:
        load_strategy(cfg, "a", tmp_path)
    assert "\n" not in str(error.value)


def test_the_shipped_variants_are_deltas_of_their_base():
    from conftest import REPO

    for name in ("control", "control-no-d", "joint-no-d", "joint-beta25", "scratch", "scratch-control"):
        text = (REPO / "ensembles" / f"{name}.yaml").read_text()
        assert "base:" in text and "combiner:" not in text and len(text.splitlines()) <= 5, name


@pytest.mark.parametrize("text, key", [("beta: 1.5", "beta"), ("beta: -0.1", "beta"), ("balance: equal", "balance")])
def test_joint_settings_out_of_range_are_refused_with_the_file_and_key(tmp_path, text, key):
    (tmp_path / "bad.yaml").write_text(f"combiner: joint\n{text}\n")
    with pytest.raises(UserError) as error:
        load_strategy(toy_config(), "bad", tmp_path)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'bad.yaml'}: {key}") and "\n" not in message


# ---- beta, balancing and diversity --------------------------------------------------------------------------

def joint_model(beta, balance="none", discriminator=True):
    torch.manual_seed(0)
    cfg = toy_config()
    members = {name: build_member(cfg, name, Spec) for name in cfg.members}
    joint = JointEnsemble(members, 3, FusionConfig(hidden=8, layers=2), discriminator, beta, balance, 0.01)
    dataset = ToyImages(4)
    return joint.train(), {"photo": dataset.photo, "mask": dataset.mask}


def member_parameters(joint, name):
    return list(joint.members[name].networks()["generator"].parameters())


def gradients(loss, parameters):
    return [torch.zeros_like(p) if g is None else g
            for p, g in zip(parameters, torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True))]


def test_the_control_sends_no_fusion_gradient_into_the_members_while_the_fusion_net_learns():
    joint, batch = joint_model(beta=0.0)
    losses = joint.generator_losses(batch, joint(batch))
    for name in joint.members:
        from_fusion = gradients(losses["loss_fusion_ce"], member_parameters(joint, name))
        assert all(torch.count_nonzero(g) == 0 for g in from_fusion)
        assert losses[f"grad_fusion.{name}"] == 0 and losses[f"grad_own.{name}"] > 0
    assert sum(g.abs().sum() for g in gradients(losses["loss_fusion_ce"], list(joint.fusion.parameters()))) > 0
    fusion_before = [p.clone() for p in joint.fusion.parameters()]
    train_step(joint, batch, joint.optimizers(), Precision("fp32", torch.device("cpu")))
    assert any(not torch.equal(a, b) for a, b in zip(fusion_before, joint.fusion.parameters()))


@pytest.mark.parametrize("discriminator", [True, False])
def test_beta_one_trains_the_members_by_the_ensemble_loss_alone_but_the_gan_term(discriminator):
    joint, batch = joint_model(beta=1.0, discriminator=discriminator)
    losses = joint.generator_losses(batch, joint(batch))
    minimised = {key for key in losses if key.startswith("loss_")}
    adversarial = [name for name, member in joint.members.items() if "discriminator" in member.networks()]
    assert adversarial == (["pix2pix", "unet_ce_adv"] if discriminator else [])
    assert minimised == {"loss_fusion_ce"} | {f"loss_g_gan.{name}" for name in adversarial}
    assert {f"own.{name}" for name in joint.members} <= set(losses)  # still logged
    total = sum(losses[key] for key in minimised)
    for name in joint.members:
        expected = losses["loss_fusion_ce"] + (losses[f"loss_g_gan.{name}"] if name in adversarial else 0)
        for got, want in zip(gradients(total, member_parameters(joint, name)),
                             gradients(expected, member_parameters(joint, name))):
            torch.testing.assert_close(got, want)
        assert (losses[f"grad_own.{name}"] > 0) == (name in adversarial)


def test_beta_scales_the_fusion_gradient_into_the_members_and_not_into_the_fusion_net():
    joint, batch = joint_model(beta=1.0)
    joint.eval()  # no dropout or batch statistics: the two passes see the same function
    full = joint.generator_losses(batch, joint(batch))["loss_fusion_ce"]
    joint.beta = 0.25
    scaled = joint.generator_losses(batch, joint(batch))["loss_fusion_ce"]
    for name in joint.members:
        parameters = member_parameters(joint, name)
        for a, b in zip(gradients(scaled, parameters), gradients(full, parameters)):
            torch.testing.assert_close(a, 0.25 * b)
    parameters = list(joint.fusion.parameters())
    for a, b in zip(gradients(scaled, parameters), gradients(full, parameters)):
        torch.testing.assert_close(a, b)


def test_balancing_modes_weigh_the_losses_as_specified():
    beta = 0.25
    joint, batch = joint_model(beta, balance="none")
    raw = joint.generator_losses(batch, joint(batch))
    assert not any(key.startswith("weight.") for key in raw)
    torch.testing.assert_close(raw["loss_l1.unet_l1"], (1 - beta) * raw["own.unet_l1"])
    torch.testing.assert_close(raw["loss_g_gan.pix2pix"] + raw["loss_g_l1.pix2pix"] / (1 - beta), raw["own.pix2pix"])

    joint, batch = joint_model(beta, balance="normalise")
    losses = joint.generator_losses(batch, joint(batch))  # the first step: the running means are this step's values
    fused = losses["loss_fusion_ce"]
    for name in joint.members:
        torch.testing.assert_close(losses[f"weight.{name}"], (1 - beta) * fused / losses[f"own.{name}"])
    torch.testing.assert_close(losses["loss_ce.unet_ce"], fused * (1 - beta))  # own loss at the fusion's scale
    torch.testing.assert_close(losses["loss_g_gan.pix2pix"] + losses["loss_g_l1.pix2pix"] / (1 - beta), fused)
    running = joint.balancer.running.clone()
    joint.generator_losses(batch, joint(batch))
    assert not torch.equal(running, joint.balancer.running)  # a training step moves the running means ...
    running = joint.balancer.running.clone()
    with torch.no_grad():
        joint.generator_losses(batch, joint(batch))
    assert torch.equal(running, joint.balancer.running)  # ... an evaluation does not
    assert "balancer.running" in joint.state_dict()  # checkpointed: a resumed run continues them

    joint, batch = joint_model(beta, balance="uncertainty")
    with torch.no_grad():
        joint.balancer.log_variance.copy_(torch.tensor([0.5, 1.0, 2.0, 3.0, 1.5]))  # fusion, then the members in order
    losses = joint.generator_losses(batch, joint(batch))
    weights = torch.exp(-joint.balancer.log_variance.detach())
    torch.testing.assert_close(losses["weight.fusion"], weights[0])
    torch.testing.assert_close(losses["weight.unet_l1"], (1 - beta) * weights[2])
    values = torch.stack([losses["loss_fusion_ce"] / weights[0]] + [losses[f"own.{m}"] for m in joint.members])
    torch.testing.assert_close(losses["loss_uncertainty"], (weights * values + joint.balancer.log_variance).sum())
    grad, = torch.autograd.grad(losses["loss_uncertainty"], joint.balancer.log_variance, retain_graph=True)
    torch.testing.assert_close(grad, 1 - weights * values)  # Kendall et al.: the optimum is s = log(loss)
    assert any(group["params"][0] is joint.balancer.log_variance for group in joint.optimizer_groups()["generator"])


def test_diversity_is_the_share_of_valid_pixels_where_two_members_disagree():
    joint, _ = joint_model(0.5)
    mask = torch.tensor([[[0, 1, 2, 255]]])
    probs = {name: torch.nn.functional.one_hot(torch.tensor([[labels]]), 3).permute(0, 3, 1, 2).float()
             for name, labels in (("pix2pix", [0, 1, 2, 0]), ("unet_l1", [0, 2, 2, 1]), ("unet_ce", [1, 2, 0, 2]))}
    tallies = {key: (int(hits), int(total)) for key, (hits, total) in
               joint.pixel_tallies({"mask": mask}, {"probs": probs}).items()}
    assert tallies == {"disagreement.pix2pix_vs_unet_l1": (1, 3), "disagreement.pix2pix_vs_unet_ce": (3, 3),
                       "disagreement.unet_l1_vs_unet_ce": (2, 3), "diversity": (6, 9)}  # the void pixel never counts
