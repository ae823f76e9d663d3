"""environment.yml cannot be exercised here (no conda): keep it in step with pyproject by a test."""

import tomllib

import yaml

from conftest import REPO


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip) - {"-e ."} == wanted
    assert "-e ." in pip


def test_every_experiment_file_is_a_valid_delta():
    from seg_p2p.config import load_config

    for path in sorted((REPO / "experiments").glob("*.yaml")):
        cfg = load_config(REPO / "params.yaml", path)
        assert cfg.name == path.stem, path
