"""`seg-p2p plan`: the study's stages as DVC has them, their costs, hours, the critical path and the disk check.

Its disk figure against what a tiny study really leaves is checked in test_pipeline.py, on the study it runs.
"""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, SEG_P2P, tiny_config, tiny_params

from seg_p2p.errors import UserError


def plan_json(*args: str, cwd: Path = REPO) -> dict:
    result = subprocess.run([str(SEG_P2P), "plan", "--json", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def default_plan() -> dict:
    return plan_json()


def test_the_plan_has_dvcs_stages_and_dependencies(default_plan):
    """Stage names and the stages each waits for are DVC's own, read from dvc.yaml and params.yaml."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        graph = repo.index.graph  # an edge runs from a stage to a stage it depends on
        dvc = {stage.addressing: {dep.addressing for dep in graph.successors(stage)} for stage in graph.nodes}
    ours = {stage["name"]: set(stage["needs"]) for stage in default_plan["stages"]}
    assert ours == dvc


def test_totals_add_up_and_the_critical_path_is_a_chain_of_cluster_jobs(default_plan):
    stages = {stage["name"]: stage for stage in default_plan["stages"]}
    jobs = {part["name"]: part for stage in stages.values() for part in (stage["parts"] or [stage])}
    total = default_plan["total"]
    assert len(stages) == 36 and total["jobs"] == len(jobs) == 36 - 3 + 3 * 11  # a job per strategy and seed
    assert total["disk_bytes"] == sum(stage["disk_bytes"] for stage in stages.values())
    assert total["train_flops"] == sum(stage["train_flops"] for stage in stages.values()) > 0
    path = total["critical_path"]
    assert path[:2] == ["code", "prepare"] and path[-1] == "report"
    assert all(before.split("/")[0] in jobs[after]["needs"] for before, after in zip(path, path[1:]))
    # the reference trains for the members' FLOPs summed, in one job: longer than any member and what follows it
    assert path == ["code", "prepare", "reference@0", "report"]
    assert all(jobs["reference@0"]["flops"] > jobs[n]["flops"] for n in jobs if n.startswith(("train@", "ensemble@")))
    assert total["hours"] is None and total["critical_path_flops"] == sum(jobs[n]["flops"] for n in path)


def test_a_strategy_that_reads_no_member_waits_only_for_the_data(default_plan):
    """`scratch` trains its members from random weights: on a cluster it runs beside the members' trainings."""
    parts = {part["name"]: part for stage in default_plan["stages"] for part in stage["parts"]}
    assert set(parts["ensemble@0/scratch"]["needs"]) == {"prepare", "code"}
    assert "train@pix2pix-0" in parts["ensemble@0/joint"]["needs"]
    assert "predict@unet_ce-0" in parts["ensemble@0/max"]["needs"]
    stage = next(stage for stage in default_plan["stages"] if stage["name"] == "ensemble@0")
    assert stage["train_flops"] == sum(part["train_flops"] for part in stage["parts"])


def test_a_throughput_turns_flops_into_hours(tmp_path):
    """In a folder with a params file and strategies only: the plan needs no DVC project and no data."""
    tiny_params(tmp_path)
    (tmp_path / "ensembles").symlink_to(REPO / "ensembles")
    result = subprocess.run([str(SEG_P2P), "plan", "--json", "--throughput", "0.5"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    plan = json.loads(result.stdout)
    flops = sum(stage["flops"] for stage in plan["stages"]
                if stage["kind"] in ("train", "predict", "reference", "ensemble"))
    assert plan["total"]["hours"] == pytest.approx(flops / 0.5e12 / 3600)
    assert plan["total"]["hours_on"] == "0.5 TFLOP/s achieved" and plan["total"]["gpu_hours"] is None  # a CPU study


def test_measure_times_each_member_here_and_says_it_is_the_cpu(tmp_path):
    from seg_p2p.plan.study import study_plan

    plan = study_plan(tiny_config(), REPO / "ensembles", measure=True)
    assert set(plan.rates.measured) == set(tiny_config().members)
    assert plan.rates.device.startswith("cpu (") and plan.total()["hours"] > 0


def test_a_study_that_does_not_fit_the_free_disk_stops_in_one_line(tmp_path, monkeypatch):
    import shutil

    from seg_p2p.plan.show import announce
    from seg_p2p.plan.study import study_plan

    cfg = tiny_config()
    needed = study_plan(cfg, REPO / "ensembles").total()["disk_bytes"]
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12, needed - 1))
    with pytest.raises(UserError, match=r"still writes .* GB and .* GB are free") as error:
        announce(cfg, tmp_path, REPO / "ensembles")
    assert "\n" not in str(error.value)
    # what a stage's outputs already hold counts as written: a study half done needs only the rest
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "prepared").write_bytes(b"x" * 10**6)
    announce(cfg, tmp_path, REPO / "ensembles")


def test_a_published_dataset_not_downloaded_is_planned_from_its_published_counts():
    from seg_p2p.config import load_config
    from seg_p2p.plan.data import split_sizes

    sizes = split_sizes(load_config(REPO / "params.yaml", REPO / "experiments" / "ade20k-gpu.yaml").data)
    assert (len(sizes.train), len(sizes.val), len(sizes.test)) == (20210 - 2021, 2021, 2000)
    assert "published counts" in sizes.source
    with pytest.raises(UserError, match="data.root"):
        split_sizes(tiny_config(data={"dataset": "mine.yaml", "root": "nowhere"}).data)


def test_a_dataset_on_disk_is_sized_from_its_headers():
    from conftest import shared_dataset

    from seg_p2p.plan.data import split_sizes

    root = shared_dataset("facades")
    sizes = split_sizes(tiny_config(data={"dataset": "facades", "root": str(root)}).data)
    assert (len(sizes.train), len(sizes.val), len(sizes.test)) == (360, 40, 106)
    assert "headers" in sizes.source


@pytest.mark.slow
@pytest.mark.parametrize("experiment, limit_gb", [("facades-256-paper", 20), ("ade20k-gpu", 200)])
def test_the_paper_scale_studies_fit_their_disk_budgets(experiment, limit_gb):
    """The footprint issue's budgets, for the study it measured: the budget-matched reference, added since, apart."""
    plan = plan_json("--experiment", f"experiments/{experiment}.yaml")
    reference = sum(stage["disk_bytes"] for stage in plan["stages"] if stage["kind"] == "reference")
    assert 0 < reference < 0.2 * plan["total"]["disk_bytes"]
    assert plan["total"]["disk_bytes"] - reference <= limit_gb * 1e9, plan["total"]["disk_bytes"] / 1e9


# ---- what the plan assumes is what the code writes ----

@pytest.mark.parametrize("classes, kept", [(8, 8), (20, 12)])
def test_stored_probabilities_keep_every_class_up_to_stored_classes_then_the_most_probable(tmp_path, classes, kept):
    from seg_p2p.plan.estimate import NPY_HEADER
    from seg_p2p.probabilities import StoredProbabilities, open_probabilities, stored_bytes

    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(2, classes, 5, 7) * 3, 1)
    with open_probabilities(tmp_path, "test", classes, 12, [(5, 7)] * 2) as writer:
        for i in range(2):
            writer[i] = probs[i]
    back = StoredProbabilities(tmp_path, "test", classes, "rerun predict")
    data_files = sorted(tmp_path.glob("*.npy"))
    assert sum(f.stat().st_size - NPY_HEADER for f in data_files) == stored_bytes(classes, 12, 2 * 5 * 7)
    for i in range(2):
        original = probs[i].numpy().astype(np.float16).astype(np.float32)
        if kept == classes:  # lossless: exactly what was computed, in float16
            np.testing.assert_array_equal(back[i], original)
            continue
        np.testing.assert_array_equal(back[i].argmax(0), original.argmax(0))
        # the kept probabilities, exactly, and they are the most probable (ties in float16 may keep either class)
        top = back.classes[i].astype(np.int64)
        kept_values = np.take_along_axis(original, top, 0)
        np.testing.assert_array_equal(np.take_along_axis(back[i], top, 0), kept_values)
        rest = original.copy()
        np.put_along_axis(rest, top, -1.0, 0)
        assert (kept_values.min(0) >= rest.max(0)).all()
        np.testing.assert_allclose(back[i].sum(0), 1.0, atol=1e-2)  # the rest share what they leave
    if kept < classes:  # their class ids are part of them: without them, one line naming the file
        (tmp_path / "test_probs_classes.npy").unlink()
        with pytest.raises(UserError, match=r"test_probs_classes.npy: missing; rerun predict"):
            StoredProbabilities(tmp_path, "test", classes, "rerun predict")


def test_dvcs_cache_links_outputs_never_copies_them():
    from seg_p2p.environment import CACHE_LINKS

    config = (REPO / ".dvc" / "config").read_text()
    assert f'type = "{CACHE_LINKS}"' in config and "copy" not in CACHE_LINKS


def test_a_bad_experiment_is_named_in_one_line():
    result = subprocess.run([str(SEG_P2P), "plan", "--experiment", "nope.yaml"], cwd=REPO, capture_output=True,
                            text=True)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "nope.yaml" in result.stderr
