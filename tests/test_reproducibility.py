"""Same seed, same CPU: the same run, to the last bit (timing columns aside); another seed: another run.
And the package only ever deserialises safely: torch.load(weights_only=True), yaml.safe_load.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from conftest import REPO, comparable_summary, read_history, tiny_params, train_argv

PACKAGE = REPO / "seg_p2p"
# Training tests run on one thread and track into their own store, copied from the ready-made one.
TRAINS = pytest.mark.usefixtures("one_thread", "mlflow_store")


def train(workspace: Path, out: Path, member: str, seed: int) -> Path:
    from seg_p2p.cli import main

    main(train_argv(workspace, out, member=member, seed=seed))
    return out


@TRAINS
@pytest.mark.parametrize("member", ["pix2pix", "unet_ce"])
def test_same_seed_same_run_other_seed_other_run(workspace, tmp_path, member):
    import torch

    first = train(workspace, tmp_path / "a", member, 0)
    second = train(workspace, tmp_path / "b", member, 0)
    other = train(workspace, tmp_path / "c", member, 1)

    assert read_history(first / "history.csv") == read_history(second / "history.csv")
    assert comparable_summary(first / "summary.json") == comparable_summary(second / "summary.json")
    a = torch.load(first / "checkpoints" / "best.pt", weights_only=True)["model"]
    b = torch.load(second / "checkpoints" / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert (first / "samples" / "epoch_003.png").read_bytes() == (second / "samples" / "epoch_003.png").read_bytes()

    losses = [{k: v for k, v in row.items() if k.startswith("loss_")} for row in read_history(first / "history.csv")]
    other_losses = [{k: v for k, v in row.items() if k.startswith("loss_")}
                    for row in read_history(other / "history.csv")]
    assert losses != other_losses
    assert json.loads((first / "summary.json").read_text())["final"] != \
        json.loads((other / "summary.json").read_text())["final"]


@TRAINS
def test_predict_is_reproducible_with_dropout_at_test(workspace, tmp_path):
    """The reference keeps dropout on at test time: predict seeds it, so a checkpoint gives one answer."""
    import numpy as np

    from seg_p2p.cli import main

    params = tiny_params(tmp_path, {"members": {"unet_l1": {"generator": {"dropout_at_test": True}}},
                                    "train": {"n_epochs": 1, "n_epochs_decay": 0}})
    main(train_argv(workspace, tmp_path / "train", member="unet_l1", params=params))
    probs = []
    for out in ("p1", "p2"):
        main(["--params", str(params), "predict", "--member", "unet_l1", "--data", str(workspace / "data"),
              "--checkpoint", str(tmp_path / "train" / "checkpoints" / "best.pt"), "--out", str(tmp_path / out),
              "--split", "test"])
        probs.append(np.load(tmp_path / out / "test_probs.npy"))
    assert np.array_equal(probs[0], probs[1])


def calls(tree: ast.AST, owner: str, attribute: str):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == attribute:
            value = node.func.value
            if isinstance(value, ast.Name) and value.id == owner:
                yield node


def sources():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    return [(path, ast.parse(path.read_text(), str(path))) for path in files]


def test_every_torch_load_uses_weights_only():
    found = 0
    for path, tree in sources():
        for node in calls(tree, "torch", "load"):
            found += 1
            keywords = {kw.arg: kw.value for kw in node.keywords}
            assert "weights_only" in keywords, f"{path}:{node.lineno}: torch.load without weights_only=True"
            value = keywords["weights_only"]
            assert isinstance(value, ast.Constant) and value.value is True, f"{path}:{node.lineno}"
        assert "pickle.load" not in path.read_text(), path
        for node in calls(tree, "np", "load"):
            keywords = {kw.arg: kw.value for kw in node.keywords}
            allow = keywords.get("allow_pickle")
            assert allow is None or (isinstance(allow, ast.Constant) and allow.value is False), \
                f"{path}:{node.lineno}: np.load with allow_pickle"
    assert found >= 1


def test_yaml_is_read_with_safe_load_only():
    found = 0
    unsafe = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}
    for path, tree in sources():
        for name in unsafe:
            assert not list(calls(tree, "yaml", name)), f"{path}: yaml.{name}"
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "yaml":
                assert not {alias.name for alias in node.names} & unsafe, f"{path}:{node.lineno}"
        found += len(list(calls(tree, "yaml", "safe_load")))
    assert found >= 1
