"""The members: exact reference parameter counts, the GAN steps, and learning on a fixed batch."""

import numpy as np
import pytest
import torch
from conftest import tiny_config

from seg_p2p.config import load_config
from seg_p2p.device import Precision
from seg_p2p.engine import train_step
from seg_p2p.models import MEMBER_KINDS, build_member, parameter_counts, parameter_table
from seg_p2p.models.networks import PatchDiscriminator, UnetGenerator
from seg_p2p.models.pix2pix import Pix2PixConfig, UnetL1Config
from seg_p2p.models.unet_ce import UnetCEConfig

FP32 = Precision("fp32", torch.device("cpu"))

PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)


class Spec:
    palette = PALETTE
    num_classes = len(PALETTE)


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_reference_parameter_counts():
    with torch.device("meta"):
        assert count(UnetGenerator(3, 3, num_downs=8, ngf=64)) == 54_413_955
        assert count(PatchDiscriminator(6, ndf=64, n_layers=3)) == 2_768_705
        assert count(UnetGenerator(3, 19, num_downs=8)) == 54_446_739
        assert count(PatchDiscriminator(22)) == 2_785_089


def test_params_command_with_paper_settings(capsys):
    from seg_p2p.cli import main

    cfg = load_config("params.yaml", overrides={
        "data": {"crop_size": 256, "load_size": 286},
        "members": {"pix2pix": {"generator": {"ngf": 64, "head": "rgb", "num_downs": None},
                                "discriminator": {"ndf": 64}}}})
    table = parameter_table(cfg)
    assert table["pix2pix"]["generator"] == 54_413_955
    assert table["pix2pix"]["discriminator"] == 2_768_705
    assert table["pix2pix"]["inference"] == 54_413_955
    main(["params"])
    assert '"pix2pix"' in capsys.readouterr().out


def members_config(head="rgb"):
    """conftest's tiny config, generators without dropout (learning on a fixed batch) and with `head`."""
    generator = {"head": head, "dropout": 0.0}
    return tiny_config(members={"pix2pix": {"generator": generator}, "unet_l1": {"generator": generator}})


def fixed_batch(n=4, size=32):
    torch.manual_seed(0)
    mask = torch.zeros(n, size, size, dtype=torch.long)
    mask[:, :, size // 2:] = 1
    mask[:, size // 2:, :] += 2
    photo = PALETTE_T[mask].permute(0, 3, 1, 2) + 0.1 * torch.randn(n, 3, size, size)
    return {"photo": photo, "mask": mask}


PALETTE_T = torch.tensor(PALETTE, dtype=torch.float32) / 127.5 - 1


@pytest.mark.parametrize("member,head", [("pix2pix", "rgb"), ("pix2pix", "onehot"), ("unet_l1", "rgb"),
                                         ("unet_ce", "rgb")])
def test_loss_goes_down_on_a_fixed_batch(member, head):
    torch.manual_seed(0)
    model = build_member(members_config(head), member, Spec)
    optimizers = model.optimizers()
    batch = fixed_batch()
    model.train()
    first = None
    for _ in range(60):
        stats = train_step(model, batch, optimizers, FP32)
        l1_or_ce = {k: v for k, v in stats.items() if k in ("loss_g_l1", "loss_l1", "loss_ce")}
        first = first or l1_or_ce
    for key, value in l1_or_ce.items():
        assert value < 0.85 * first[key], (key, first[key], value)
    probs = model.probabilities(model(batch))
    assert probs.shape == (4, 4, 32, 32)
    torch.testing.assert_close(probs.sum(1), torch.ones(4, 32, 32))


def test_gan_step_updates_both_networks_and_keeps_d_out_of_g_optimizer():
    torch.manual_seed(0)
    model = build_member(members_config(), "pix2pix", Spec)
    optimizers = model.optimizers()
    g_params = {id(p) for group in optimizers["generator"].param_groups for p in group["params"]}
    d_params = {id(p) for group in optimizers["discriminator"].param_groups for p in group["params"]}
    assert g_params == {id(p) for p in model.generator.parameters()}
    assert d_params == {id(p) for p in model.discriminator.parameters()}
    g_before = [p.clone() for p in model.generator.parameters()]
    d_before = [p.clone() for p in model.discriminator.parameters()]
    assert model.networks() == {"generator": model.generator, "discriminator": model.discriminator}
    stats = train_step(model, fixed_batch(), optimizers, FP32)
    assert {"loss_d", "loss_g_gan", "loss_g_l1", "d_real", "d_fake"} <= set(stats)
    assert all(not torch.equal(a, b) for a, b in zip(g_before, model.generator.parameters()) if a.dim() > 1)
    assert all(not torch.equal(a, b) for a, b in zip(d_before, model.discriminator.parameters()) if a.dim() > 1)
    assert all(p.requires_grad for p in model.discriminator.parameters())


def test_the_adversarial_ce_member_takes_gradient_from_its_gan_term_and_updates_its_discriminator():
    """unet_ce_adv: its segmenter gets the GAN term's gradient (weighted by lambda_adv, not only the cross-entropy's),
    and one engine step updates its PatchGAN on (photo, one-hot truth) against (photo, softmax)."""
    torch.manual_seed(0)
    model = build_member(members_config(), "unet_ce_adv", Spec)
    assert model.networks() == {"generator": model.unet, "discriminator": model.discriminator}
    assert model.discriminator.model[0].in_channels == 3 + Spec.num_classes
    batch = fixed_batch()
    output = model(batch)
    losses = model.generator_losses(batch, output)
    assert set(losses) == {"loss_ce", "loss_g_gan"}
    gan_grad = torch.autograd.grad(losses["loss_g_gan"], list(model.unet.parameters()), allow_unused=True)
    assert sum(g.abs().sum() for g in gan_grad if g is not None) > 0  # the GAN term reaches the segmenter
    assert all(p.grad is None for p in model.discriminator.parameters())  # and not its discriminator
    d_before = [p.clone() for p in model.discriminator.parameters()]
    stats = train_step(model, batch, model.optimizers(), FP32)
    assert {"loss_ce", "loss_g_gan", "loss_d", "d_real", "d_fake"} <= set(stats)
    assert all(not torch.equal(a, b) for a, b in zip(d_before, model.discriminator.parameters()) if a.dim() > 1)
    weight = model.cfg.lambda_adv
    model.cfg = model.cfg.model_copy(update={"lambda_adv": 2 * weight})
    model.eval()  # the same BatchNorm statistics for both forwards
    with torch.no_grad():
        doubled = model.generator_losses(batch, model(batch))["loss_g_gan"].item()
        model.cfg = model.cfg.model_copy(update={"lambda_adv": weight})
        assert doubled == pytest.approx(2 * model.generator_losses(batch, model(batch))["loss_g_gan"].item(), rel=1e-5)
    model.drop_discriminator()  # joint training without D: cross-entropy alone, no discriminator network
    assert set(model.generator_losses(batch, model(batch))) == {"loss_ce"} and "discriminator" not in model.networks()


def test_unet_l1_has_no_discriminator_and_ce_counts():
    cfg = members_config()
    assert "discriminator" not in parameter_counts(build_member(cfg, "unet_l1", Spec))
    counts = parameter_counts(build_member(cfg, "unet_ce", Spec))
    assert counts["training"] == counts["inference"] == counts["generator"]


def test_dropout_at_test_keeps_dropout_active():
    cfg = tiny_config(data={"crop_size": 64, "load_size": 64},
                      members={"unet_l1": {"generator": {"dropout": 0.5, "dropout_at_test": True}}})
    model = build_member(cfg, "unet_l1", Spec).eval()
    x = {"photo": torch.randn(1, 3, 64, 64)}
    assert not torch.equal(model(x), model(x))


def test_unknown_member_is_a_user_error():
    from seg_p2p.errors import UserError

    with pytest.raises(UserError, match="not defined under members"):
        build_member(members_config(), "pix2pixx", Spec)


def test_config_types_are_kinds():
    cfg = members_config()
    assert isinstance(cfg.members["pix2pix"], Pix2PixConfig)
    assert isinstance(cfg.members["unet_l1"], UnetL1Config)
    assert isinstance(cfg.members["unet_ce"], UnetCEConfig)
    assert {kind: MEMBER_KINDS[kind].config for kind in ("pix2pix", "unet_l1", "unet_ce")} == \
        {"pix2pix": Pix2PixConfig, "unet_l1": UnetL1Config, "unet_ce": UnetCEConfig}
