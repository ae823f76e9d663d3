"""The paper's settings are one named, complete preset (experiments/presets/pix2pix-paper.yaml) that the paper
experiments build on; and what `seg-p2p exp run` hands DVC reproduces each experiment exactly."""

from __future__ import annotations

import shutil

import pytest
import yaml
from conftest import REPO

from seg_p2p.config import load_config
from seg_p2p.errors import UserError
from seg_p2p.experiments import overrides
from seg_p2p.models import parameter_table
from seg_p2p.settings import experiment_settings, read_yaml

EXPERIMENTS = sorted((REPO / "experiments").glob("*.yaml"))
PAPER = [path for path in EXPERIMENTS if path.stem.endswith("-paper")]  # "the paper's settings" by their names


def test_the_paper_experiments_build_on_the_preset():
    assert {path.stem for path in PAPER} >= {"facades-256-paper", "cityscapes-paper"}
    assert all(read_yaml(path).get("preset") == "pix2pix-paper" for path in PAPER)


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_a_paper_experiment_has_the_reference_settings_and_parameter_counts(path):
    """../shared/REFERENCE.md: unet_256, ngf 64, BatchNorm, dropout 0.5; basic D (70x70 PatchGAN, n_layers 3, ndf 64);
    vanilla GAN; lambda_L1 100; Adam 2e-4, betas (0.5, 0.999); load 286 / crop 256 + flip; batch 1; 100 + 100."""
    cfg = load_config(REPO / "params.yaml", path)
    pix2pix = cfg.members["pix2pix"]
    g, d = pix2pix.generator, pix2pix.discriminator
    assert (g.arch, g.ngf, g.num_downs, g.norm, g.dropout, g.head) == ("unet", 64, 8, "batch", 0.5, "rgb")
    assert (d.ndf, d.n_layers, d.norm) == (64, 3, "batch")
    assert (pix2pix.gan_mode, pix2pix.lambda_l1) == ("vanilla", 100.0)
    assert (pix2pix.optimizer.lr, pix2pix.optimizer.beta1, pix2pix.optimizer.beta2) == (2e-4, 0.5, 0.999)
    assert cfg.members["unet_l1"].generator == g and cfg.members["unet_l1"].optimizer == pix2pix.optimizer
    assert (cfg.data.load_size, cfg.data.crop_size, cfg.data.flip) == (286, 256, True)
    assert (cfg.train.batch_size, cfg.train.n_epochs, cfg.train.n_epochs_decay) == (1, 100, 100)
    counts = parameter_table(cfg)
    assert counts["pix2pix"]["generator"] == 54_413_955 and counts["pix2pix"]["discriminator"] == 2_768_705
    assert counts["unet_l1"]["generator"] == 54_413_955


def test_nothing_params_yaml_shrinks_for_the_cpu_leaks_into_a_preset_experiment(tmp_path):
    """A CPU-sized value anywhere in params.yaml's data, train or members is replaced by the preset's."""
    params = read_yaml(REPO / "params.yaml")
    params["members"]["pix2pix"]["discriminator"]["ndf"] = 8
    params["train"]["val_every"] = 1
    params["members"]["tiny"] = {"kind": "unet_l1"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copytree(REPO / "experiments", tmp_path / "experiments")
    cfg = load_config(tmp_path / "params.yaml", tmp_path / "experiments" / "facades-256-paper.yaml")
    assert cfg.members["pix2pix"].discriminator.ndf == 64 and cfg.train.val_every == 10 and "tiny" not in cfg.members


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_the_overrides_handed_to_dvc_reproduce_the_experiment(path, tmp_path):
    """`dvc exp run -S ...` applies them to params.yaml with DVC's own parser; the result is the experiment."""
    from dvc.utils.hydra import apply_overrides

    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    apply_overrides(str(tmp_path / "params.yaml"), overrides(read_yaml(REPO / "params.yaml"),
                                                             experiment_settings(REPO / "params.yaml", path)))
    assert load_config(tmp_path / "params.yaml") == load_config(REPO / "params.yaml", path)


def test_an_unknown_preset_is_one_line_naming_the_file(tmp_path):
    (tmp_path / "x.yaml").write_text("name: x\npreset: pix2pix-papr\n")
    with pytest.raises(UserError, match=r"x\.yaml: preset: no .*pix2pix-papr\.yaml \(known: none\); fix the name"):
        load_config(REPO / "params.yaml", tmp_path / "x.yaml")
