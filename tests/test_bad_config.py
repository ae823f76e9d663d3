"""Malformed inputs, table-driven: every one stops `seg-p2p` with exit 2 and ONE line on stderr that
names the file or key and says what to do; no traceback, and nothing is written (no output, no MLflow run).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml
from conftest import tiny_params, tiny_project, tiny_settings, train_argv
from PIL import Image

OTHER_SPEC = {"name": "three", "void_value": 3, "classes": [{"name": "red", "colour": [255, 0, 0]},
                                                            {"name": "green", "colour": [0, 255, 0]},
                                                            {"name": "blue", "colour": [0, 0, 255]}]}
ONE_EPOCH = {"train": {"n_epochs": 1, "n_epochs_decay": 0}}


def write_index_dataset(root: Path) -> None:
    """A 3-class dataset in the index-mask layout (ROOT/<split>/ photos, ROOT/<split>annot/ masks), 32 px."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 2)):
        for i in range(count):
            for folder, array in ((split, rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)),
                                  (f"{split}annot", rng.integers(0, 3, (4, 4)).repeat(8, 0).repeat(8, 1))):
                (root / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array.astype(np.uint8)).save(root / folder / f"{i}.png")


@pytest.fixture(scope="module")
def world(workspace, mlflow_template) -> dict[str, Path]:
    """Prepared synthetic data (conftest's workspace), a prepared 3-class dataset, and real 1-epoch checkpoints:
    unet_ce on synthetic, pix2pix on the 3-class dataset."""
    from seg_p2p.cli import main

    base = workspace
    write_index_dataset(base / "raw3")
    (base / "three.yaml").write_text(yaml.safe_dump(OTHER_SPEC))
    three = tiny_params(base, {"data": {"dataset": str(base / "three.yaml"), "root": str(base / "raw3")},
                               **ONE_EPOCH}, name="three_params.yaml")
    main(["--params", str(three), "prepare", "--out", str(base / "data3")])
    one = tiny_params(base, ONE_EPOCH, name="one_epoch.yaml")
    shutil.copyfile(mlflow_template, base / "mlflow.db")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{base / 'mlflow.db'}")
        main(train_argv(base, base / "unet_ce_synthetic", member="unet_ce", params=one))
        main(["--params", str(three), "train", "--member", "pix2pix", "--data", str(base / "data3"),
              "--out", str(base / "pix2pix_three")])
    return {"base": base, "params": base / "params.yaml", "data": base / "data", "data3": base / "data3",
            "unet_ce_ckpt": base / "unet_ce_synthetic" / "checkpoints" / "best.pt",
            "pix2pix_three_ckpt": base / "pix2pix_three" / "checkpoints" / "best.pt"}


@dataclass
class Case:
    """`argv(world, case_dir)` builds the command line (writing any file it needs into case_dir);
    the one error line must contain every fragment of `says`."""

    id: str
    argv: Callable[[dict, Path], list[str]]
    says: tuple[str, ...]


def params_with(delta: dict):
    """Train pix2pix with params.yaml (tiny) plus `delta`."""
    def argv(w, d):
        return train_argv(w["base"], d / "out", params=tiny_params(d, delta))
    return argv


def params_replacing(key: str, value):
    """Train pix2pix with params.yaml (tiny) whose top-level `key` is `value` (not merged into what is there)."""
    def argv(w, d):
        path = d / "params.yaml"
        path.write_text(yaml.safe_dump(tiny_settings() | {key: value}, sort_keys=False))
        return train_argv(w["base"], d / "out", params=path)
    return argv


def params_text(text: str | bytes, command: str = "train"):
    """A params file with exactly this content."""
    def argv(w, d):
        path = d / "params.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        if command == "prepare":
            return ["--params", str(path), "prepare", "--out", str(d / "out")]
        return train_argv(w["base"], d / "out", params=path)
    return argv


def experiment_text(text: str):
    def argv(w, d):
        path = d / "experiment.yaml"
        path.write_text(text)
        return ["--params", str(w["params"]), "prepare", "--experiment", str(path), "--out", str(d / "out")]
    return argv


def prepare_with(data: dict):
    def argv(w, d):
        return ["--params", str(tiny_params(d, {"data": data})), "prepare", "--out", str(d / "out")]
    return argv


def spec_file(spec: dict):
    """Prepare the 3-class raw dataset with this spec YAML."""
    def argv(w, d):
        (d / "spec.yaml").write_text(yaml.safe_dump(spec))
        params = tiny_params(d, {"data": {"dataset": str(d / "spec.yaml"), "root": str(w["base"] / "raw3")}})
        return ["--params", str(params), "prepare", "--out", str(d / "out")]
    return argv


def strategy(name: str, content: dict | None = None, params_delta: dict | None = None):
    """Run the ensemble stage with ensembles/<name>.yaml (written from `content` when given)."""
    def argv(w, d):
        folder = d / "ensembles"
        shutil.copytree(w["base"] / "ensembles", folder)
        if content is not None:
            (folder / f"{name}.yaml").write_text(yaml.safe_dump(content))
        params = tiny_params(d, params_delta) if params_delta else w["params"]
        return ["--params", str(params), "ensemble", "--strategy", name, "--data", str(w["data"]),
                "--runs", str(d / "runs"), "--out", str(d / "out"), "--strategies-dir", str(folder)]
    return argv


def experiment(delta: dict, file: str = "sweep.yaml"):
    """`seg-p2p exp run` with an experiment file holding `delta` (checked before DVC is called)."""
    def argv(w, d):
        (d / file).write_text(yaml.safe_dump(delta))
        return ["--params", str(w["params"]), "exp", "run", str(d / file)]
    return argv


def params_command(delta: dict):
    """`seg-p2p params` (it only prints) with params.yaml (tiny) plus `delta`."""
    def argv(w, d):
        return ["--params", str(tiny_params(d, delta)), "params"]
    return argv


def predict(member: str, checkpoint: Callable[[dict, Path], Path], data: str = "data"):
    def argv(w, d):
        return ["--params", str(w["params"]), "predict", "--member", member, "--data", str(w[data]),
                "--checkpoint", str(checkpoint(w, d)), "--out", str(d / "out"), "--split", "test"]
    return argv


def checkpoint_bytes(content: bytes):
    def make(w, d):
        (d / "best.pt").write_bytes(content)
        return d / "best.pt"
    return make


def checkpoint_object(obj):
    def make(w, d):
        import torch

        torch.save(obj() if callable(obj) else obj, d / "best.pt")
        return d / "best.pt"
    return make


def train(**changes):
    def argv(w, d):
        args = train_argv(w["base"], d / "out")
        for flag, value in changes.items():
            args[args.index(f"--{flag}") + 1] = str(value(w, d) if callable(value) else value)
        return args
    return argv


GOOD_STRATEGY = {"combiner": "mean", "members": ["pix2pix", "unet_l1"]}

CASES = [
    # --- params.yaml: keys and types
    Case("unknown top-level key", params_with({"lerning_rate": 0.1}), ("params.yaml", "unknown key 'lerning_rate'",
                                                                       "remove it or fix its spelling")),
    Case("unknown nested key", params_with({"data": {"crop_sise": 32}}), ("unknown key 'data.crop_sise'",)),
    Case("unknown member key", params_with({"members": {"pix2pix": {"generatr": {"ngf": 8}}}}),
         ("unknown key 'members.pix2pix.generatr'",)),
    Case("unknown key in a member's generator", params_with({"members": {"unet_l1": {"generator": {"nfg": 8}}}}),
         ("unknown key 'members.unet_l1.generator.nfg'",)),
    Case("string for an int", params_with({"train": {"batch_size": "eight"}}),
         ("train.batch_size", "valid integer", "'eight'", "fix this value")),
    Case("quoted number for an int", params_with({"train": {"batch_size": "4"}}),
         ("train.batch_size", "remove the quotes")),
    Case("1e-3 read as text by YAML", params_text("members:\n  pix2pix:\n    kind: pix2pix\n    optimizer:\n"
                                                   "      lr: 2e-4\n"),
         ("members.pix2pix.optimizer.lr", "write 1.0e-3")),
    Case("list for a dict", params_with({"data": [32, 32]}), ("params.yaml", "data:", "valid dictionary")),
    Case("float for a bool", params_with({"data": {"flip": 1.0}}), ("data.flip", "valid boolean")),
    Case("string for a list", params_with({"seeds": "0"}), ("seeds", "valid list")),
    Case("unknown literal", params_with({"train": {"precision": "fp8"}}), ("train.precision", "'fp8'")),
    Case("YAML syntax error", params_text("data:\n  crop_size: [32\n  load_size: 32\n"),
         ("params.yaml", "not valid YAML (line", "fix the syntax")),
    Case("tab-indented YAML", params_text("data:\n\tcrop_size: 32\n"), ("not valid YAML",)),
    Case("a section given twice", params_text("train:\n  batch_size: 4\ncluster: {}\ntrain:\n  n_epochs: 1\n"),
         ("params.yaml", "key 'train' is given twice (line 4)", "keep one of them")),
    Case("params not a mapping", params_text("- data\n- train\n"), ("params.yaml", "expected a mapping")),
    Case("params binary", params_text(b"\xff\xfe\x00\x81garbage\x00"), ("params.yaml", "not a text file")),
    Case("params is a folder", lambda w, d: train_argv(w["base"], d / "out", params=d),
         (": cannot read it", "point at a readable YAML file")),
    Case("params file missing", lambda w, d: train_argv(w["base"], d / "out", params=d / "parms.yaml"),
         ("parms.yaml: parameter file not found", "pass --params")),
    # --- params.yaml: impossible values
    Case("negative size", params_with({"data": {"load_size": -32}}), ("data.load_size", "greater than 0")),
    Case("zero max_image_pixels", prepare_with({"max_image_pixels": 0}), ("data.max_image_pixels", "greater than 0")),
    Case("float max_image_pixels", prepare_with({"max_image_pixels": 2.0e8}),
         ("data.max_image_pixels", "valid integer", "200000000.0")),
    Case("zero batch size", params_with({"train": {"batch_size": 0}}), ("train.batch_size", "greater than 0")),
    Case("synthetic image too small", params_with({"data": {"synthetic": {"size": 16}}}),
         ("data.synthetic.size", "greater than or equal to 32")),
    Case("crop larger than load", params_with({"data": {"crop_size": 64}}),
         ("data: crop_size 64 is larger than load_size 32", "set load_size >= crop_size")),
    Case("zero epochs", params_with({"train": {"n_epochs": 0, "n_epochs_decay": 0}}),
         ("train: n_epochs + n_epochs_decay is 0", "at least one epoch")),
    Case("negative epochs", params_with({"train": {"n_epochs": -1}}), ("train.n_epochs",)),
    Case("empty seeds", params_with({"seeds": []}), ("seeds is empty", "list at least one seed")),
    Case("negative seed in params", params_with({"seeds": [0, -1]}), ("seeds.1", "greater than or equal to 0")),
    Case("no members", params_text("members: {}\n"), ("members is empty",)),
    Case("unknown member kind", params_with({"members": {"pix2pix": {"kind": "gan"}}}),
         ("members.pix2pix.kind: 'gan' is not a member kind", "pix2pix, unet_l1, unet_ce")),
    Case("member without kind", params_text("members:\n  mine: {generator: {ngf: 8}}\n"),
         ("members.mine: no 'kind'", "set kind:")),
    Case("dropout out of range", params_with({"members": {"pix2pix": {"generator": {"dropout": 1.5}}}}),
         ("members.pix2pix.generator.dropout", "less than 1")),
    Case("U-Net crop not a power of two", params_with({"data": {"load_size": 48, "crop_size": 48}}),
         ("num_downs", "divisible by", "set data.crop_size to a power of two")),
    Case("device cuda without CUDA", params_with({"train": {"device": "cuda"}}),
         ("train.device: cuda is not available", "set train.device: auto or cpu")),
    Case("unknown device", params_with({"train": {"device": "tpu"}}), ("train.device", "'tpu'")),
    # --- experiment files
    Case("experiment not a mapping", experiment_text("- name\n- data\n"),
         ("experiment.yaml: expected a mapping",)),
    Case("experiment unknown key", experiment_text("data:\n  crop_sise: 32\n"),
         ("experiment.yaml (over ", "unknown key 'data.crop_sise'")),
    Case("experiment missing", lambda w, d: ["--params", str(w["params"]), "prepare", "--experiment",
                                             str(d / "nope.yaml"), "--out", str(d / "out")],
         ("nope.yaml: file not found",)),
    # --- command line
    Case("unknown member name", train(member="pix2pixx"),
         ("member 'pix2pixx' is not defined", "defined: pix2pix, unet_l1, unet_ce")),
    Case("negative seed", train(seed=-1), ("--seed -1", "0..4294967295")),
    Case("seed too large", train(seed=2**32), ("--seed 4294967296",)),
    Case("missing prepared-data folder", train(data=lambda w, d: d / "no_data"),
         ("no_data: not a prepared dataset", "seg-p2p prepare")),
    Case("data folder is not prepared", train(data=lambda w, d: w["base"] / "raw3"),
         ("raw3: not a prepared dataset",)),
    Case("output under a regular file", train(out=lambda w, d: (d / "f").write_text("x") and d / "f" / "out"),
         ("/f/out: cannot write here", "is a file")),
    # --- dataset specs
    Case("unknown dataset spec name", prepare_with({"dataset": "pascal", "root": "/nonexistent"}),
         ("pascal: no such dataset spec", "facades")),
    Case("spec YAML with an unknown key", spec_file({**OTHER_SPEC, "colour_map": {}}),
         ("spec.yaml: unknown key 'colour_map'",)),
    Case("spec YAML class without colour", spec_file({**OTHER_SPEC, "classes": [{"name": "red"}]}),
         ("spec.yaml: classes.0.colour", "fix this value")),
    Case("spec with repeated colours", spec_file({**OTHER_SPEC, "classes": [{"name": "a", "colour": [1, 2, 3]},
                                                                          {"name": "b", "colour": [1, 2, 3]}]}),
         ("spec.yaml", "colours repeat")),
    Case("dataset root not set", prepare_with({"dataset": "facades", "root": None}),
         ("data.root is not set",)),
    # --- strategies
    Case("strategy with an unknown key", strategy("mean", {**GOOD_STRATEGY, "weights": [1, 2]}),
         ("mean.yaml: unknown key 'weights'",)),
    Case("strategy naming a missing member", strategy("mean", {**GOOD_STRATEGY, "members": ["pix2pix", "segformer"]}),
         ("mean.yaml: members: 'segformer' is not a member", "fix the list")),
    Case("strategy with no members", strategy("mean", {**GOOD_STRATEGY, "members": []}), ("'(empty)'",)),
    Case("leave-one-out strategy naming a missing member",
         strategy("joint-without-pix2pix", {"combiner": "joint", "members": ["unet_l1", "unet_cee"]}),
         ("joint-without-pix2pix.yaml: members: 'unet_cee' is not a member defined in params.yaml", "fix the list")),
    Case("trained strategy with zero epochs", strategy("joint", {"combiner": "joint", "n_epochs": 0,
                                                                 "n_epochs_decay": 0}),
         ("joint.yaml: n_epochs + n_epochs_decay is 0; train for at least one epoch",)),
    Case("experiment's strategy settings with zero epochs",
         experiment({"strategies": ["joint"], "strategy_settings": {"joint": {"n_epochs": 0, "n_epochs_decay": 0}}}),
         ("joint.yaml (with strategy_settings.joint): n_epochs + n_epochs_decay is 0",)),
    Case("strategy with an unknown combiner", strategy("mean", {**GOOD_STRATEGY, "combiner": "median"}),
         ("mean.yaml: combiner", "'median'")),
    Case("unknown strategy name", strategy("nosuch"), ("nosuch.yaml: no such strategy", "known: control, ")),
    Case("joint strategy with beta above 1", strategy("joint", {"combiner": "joint", "beta": 1.5}),
         ("joint.yaml: beta", "fix this value")),
    Case("joint strategy with an unknown balancing mode", strategy("joint", {"combiner": "joint", "balance": "equal"}),
         ("joint.yaml: balance", "'equal'")),
    Case("experiment naming a strategy that does not exist", experiment({"strategies": ["max", "joint-beta42"]}),
         ("sweep.yaml (over ", "strategies: 'joint-beta42' has no ensembles/joint-beta42.yaml", "known: ",
          "fix the name")),
    Case("strategy missing member outputs", strategy("max"), ("test_probs.npy: missing", "dvc repro -f -s predict")),
    Case("joint strategy without trained members", strategy("joint"), ("best.pt: checkpoint not found",)),
    # --- names that become paths: one rule, Config.path_names() (and the experiment's and preset's file names in
    # settings.experiment_settings, --strategy in load_strategy), each a plain name (settings.plain_name_problem)
    Case("study name leaving the project", params_command({"name": "../../outside"}),
         ("params.yaml: name: '../../outside' is not a plain name", "letters, digits, - and _", "rename it")),
    Case("study name '.'", params_command({"name": "."}), ("name: '.' is not a plain name",)),
    Case("member name leaving runs/", params_with({"members": {"pix/../../x": {"kind": "unet_l1"}}}),
         ("members: 'pix/../../x' is not a plain name",)),
    Case("member name with a dot (a key path in dvc.yaml)", params_with({"members": {"unet.ce": {"kind": "unet_ce"}}}),
         ("members: 'unet.ce' is not a plain name",)),
    Case("strategy name leaving ensembles/", params_with({"strategies": ["../max"]}),
         ("strategies: '../max' is not a plain name",)),
    Case("a GAN pair whose adversarial side has no discriminator", params_with({"gan_pairs": {"unet_l1": "unet_ce"}}),
         ("gan_pairs.unet_l1: 'unet_l1' is not a member with a discriminator",)),
    Case("a GAN pair whose plain side is adversarial", params_with({"gan_pairs": {"pix2pix": "unet_ce_adv"}}),
         ("gan_pairs.pix2pix: 'unet_ce_adv' is not a member without a discriminator",)),
    Case("a GAN pair naming no member", params_with({"gan_pairs": {"pix2pix": "nobody"}}),
         ("gan_pairs.pix2pix: 'nobody' is not a member without a discriminator", "fix the pair or remove it")),
    # --- the budget-matched reference
    Case("a member named like the reference", params_with({"members": {"reference": {"kind": "unet_l1"}}}),
         ("members.reference: the name of the budget-matched network", "rename the member")),
    Case("a reference of a kind without a width", params_replacing("reference", {"kind": "pix2pix"}),
         ("reference.kind: 'pix2pix' has no width", "set reference: null")),
    Case("a reference of no kind", params_replacing("reference", {"encoder": "resnet18"}),
         ("reference: no 'kind'; set kind: to one of",)),
    Case("a reference with an unknown key", params_with({"reference": {"widht": 2.0}}),
         ("unknown key 'reference.widht'",)),
    Case("strategy budget keyed by a path", params_with({"strategy_settings": {"/tmp/x": {"n_epochs": 1}}}),
         ("strategy_settings: '/tmp/x' is not a plain name",)),
    Case("--strategy leaving the output folder", strategy("../../x"), ("strategy '../../x' is not a plain name",)),
    Case("experiment file name with a dot", experiment({"seeds": [0]}, file="my.sweep.yaml"),
         ("my.sweep.yaml: the file's name 'my.sweep' is not a plain name", "rename the file")),
    Case("preset naming a path", experiment_text("preset: ../presets/pix2pix-paper\n"),
         ("experiment.yaml: preset: '../presets/pix2pix-paper' is not a plain name",)),
    # --- sets: Config._plain_names_and_sets (seeds, strategies) and StrategyConfig._each_once (a strategy's members)
    Case("seed listed twice", params_with({"seeds": [0, 0, 1]}), ("params.yaml: seeds: 0 is listed twice",
                                                                  "list each once")),
    Case("strategy listed twice", params_command({"strategies": ["max", "max", "mean"]}),
         ("strategies: 'max' is listed twice",)),
    Case("strategy listing a member twice", strategy("mean", {**GOOD_STRATEGY, "members": ["pix2pix", "pix2pix"]}),
         ("mean.yaml: members: 'pix2pix' is listed twice", "list each member once")),
    # --- references: config.refuse_unknown_strategies, over Config.strategy_references()
    Case("budget for a strategy that does not exist",
         params_with({"strategy_settings": {"nonexistent": {"n_epochs": 1}}}),
         ("params.yaml: strategy_settings: 'nonexistent' has no ", "nonexistent.yaml (known: control, ",
          "fix the name or add the file")),
    Case("misspelt strategy budget in an experiment", experiment({"strategy_settings": {"jiont": {"n_epochs": 1}}}),
         ("sweep.yaml (over ", "strategy_settings: 'jiont' has no ensembles/jiont.yaml")),
    Case("strategy that does not exist, at train", params_with({"strategies": ["max", "jiont"]}),
         ("strategies: 'jiont' has no ensembles/jiont.yaml",)),
    # --- checkpoints
    Case("checkpoint trained on another dataset spec",
         predict("pix2pix", lambda w, d: w["pix2pix_three_ckpt"]),
         ("best.pt: checkpoint was trained on another dataset spec (3 classes; this dataset: 8",)),
    Case("unet_ce checkpoint on a dataset with other classes",
         predict("unet_ce", lambda w, d: w["unet_ce_ckpt"], data="data3"),
         ("another dataset spec",)),
    Case("checkpoint from another member", predict("pix2pix", lambda w, d: w["unet_ce_ckpt"]),
         ("best.pt: checkpoint does not fit this model", "point --checkpoint at the right one")),
    Case("checkpoint of random bytes", predict("pix2pix", checkpoint_bytes(np.random.default_rng(0).bytes(4096))),
         ("best.pt: not a readable seg_p2p checkpoint", "delete the run's checkpoints/ folder and train again")),
    Case("empty checkpoint file", predict("pix2pix", checkpoint_bytes(b"")), ("not a readable seg_p2p checkpoint",)),
    Case("checkpoint holding a bare tensor", predict("unet_ce", checkpoint_object(lambda: __import__("torch").ones(3))),
         ("best.pt: not a seg_p2p checkpoint",)),
    Case("missing checkpoint", predict("pix2pix", lambda w, d: d / "nope.pt"),
         ("nope.pt: checkpoint not found", "train the model first")),
]


def files_under(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*")}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, world, tmp_path, capsys):
    from seg_p2p.cli import main

    if case.id == "device cuda without CUDA":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    case_dir = tmp_path / "case"
    case_dir.mkdir()
    argv = case.argv(world, case_dir)
    before = files_under(tmp_path)
    world_before = files_under(world["base"])
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    err = captured.err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("seg-p2p: error: ") and "; " in line, line  # what, then what to do
    for fragment in case.says:
        assert fragment in line, line
    assert files_under(tmp_path) == before, "files were written (an output or an MLflow store)"
    assert files_under(world["base"]) == world_before


def test_the_table_is_big_enough():
    assert len(CASES) >= 25
    assert len({case.id for case in CASES}) == len(CASES)


# ---- names that become paths, and references, for every named setting and every command -----------------------

BAD_NAMES = ["../../outside", "pix/../../x", ".", "..", "a.b", "", "-x", "_x", "/abs", "a b", "x\n", "ünï", "a:b"]
NAMED_SETTINGS = {  # every key Config.path_names() reports, as a delta that gives it one name
    "name": lambda name: {"name": name},
    "members": lambda name: {"members": {name: {"kind": "unet_l1"}}},
    "strategies": lambda name: {"strategies": [name]},
    "strategy_settings": lambda name: {"strategy_settings": {name: {}}},
}


def test_the_name_rule_covers_every_named_setting():
    from conftest import tiny_config

    assert {key for key, _ in tiny_config().path_names()} == set(NAMED_SETTINGS)


@pytest.mark.parametrize("key", NAMED_SETTINGS)
@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_a_name_that_is_not_plain_is_refused_when_the_config_is_loaded(key, name, tmp_path):
    from seg_p2p.config import load_config
    from seg_p2p.errors import UserError

    with pytest.raises(UserError) as refused:
        load_config(tiny_params(tmp_path, NAMED_SETTINGS[key](name)))
    assert f"params.yaml: {key}: {name!r} is not a plain name" in str(refused.value)


@pytest.mark.parametrize("name", ["a", "A-1_b", "9x", "synthetic-cpu"])
def test_plain_names_and_budgets_of_strategies_not_run_are_accepted(name, tmp_path):
    """A budget for a strategy that exists but is not in `strategies` stays allowed: a preset sets them on purpose."""
    from seg_p2p.config import load_config

    cfg = load_config(tiny_params(tmp_path, {"name": name, "strategies": ["max"],
                                             "strategy_settings": {"joint-beta25": {"n_epochs": 1}}}))
    assert cfg.name == name and "joint-beta25" not in cfg.strategies


COMMANDS = {  # every command that reads the config; the paths are never reached (the config is refused first)
    "params": ["params"],
    "train": ["train", "--member", "pix2pix", "--data", "data", "--out", "out"],
    "predict": ["predict", "--member", "pix2pix", "--data", "data", "--checkpoint", "best.pt", "--out", "out",
                "--split", "test"],
    "ensemble": ["ensemble", "--data", "data", "--runs", "runs", "--out", "out"],
    "evaluate": ["evaluate", "--data", "data", "--runs", "runs", "--out", "out"],
    "report": ["report", "--data", "data", "--runs", "runs", "--out", "reports/study"],
    "segment": ["segment", "--model", "runs/seed0/members/pix2pix", "--out", "out", "photo.png"],
    "exp run": ["exp", "run", "experiment.yaml"],
    "cluster run": ["cluster", "run"],
    "cluster status": ["cluster", "status"],
}
REFUSED_SETTINGS = {
    "name leaving the project": ({"name": "../../outside"}, "name: '../../outside' is not a plain name"),
    "misspelt strategy budget": ({"strategy_settings": {"jiont": {"n_epochs": 1}}},
                                 "strategy_settings: 'jiont' has no ensembles/jiont.yaml (known: control, "),
}


@pytest.mark.parametrize("setting", REFUSED_SETTINGS)
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_through_the_one_config_check(setting, command, tmp_path, monkeypatch, capsys):
    """Run in a project (params.yaml, ensembles/) one folder below tmp_path: nothing is written in it or beside it
    (`../../outside` from reports/ is tmp_path/outside)."""
    from seg_p2p.cli import main

    project = tmp_path / "project"
    project.mkdir()
    delta, fragment = REFUSED_SETTINGS[setting]
    tiny_project(project, delta)
    (project / "experiment.yaml").write_text("seeds: [0]\n")
    monkeypatch.chdir(project)
    before = files_under(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(COMMANDS[command])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1 and fragment in lines[0], lines
    assert files_under(tmp_path) == before
