"""The study as DVC runs it, at a tiny size: repro, a no-op second repro, one member or strategy changed, the
plots page offline, experiments.

Slow by nature (every stage is a process): one module-scoped repo, a few minutes on 2 cores.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import BIN, run_in, study_repo, tiny_settings

pytestmark = pytest.mark.slow

# conftest's tiny params, one seed, one epoch, four strategies (a fixed, a stacked, the control and a joint one)
STUDY = {"seeds": [0], "train": {"n_epochs": 1, "n_epochs_decay": 0, "sample_every": 1},
         "strategies": ["mean", "learned", "control", "joint"]}
# every member of params.yaml, the budget-matched reference, then the strategies
MODELS = [*tiny_settings()["members"], "reference", *STUDY["strategies"]]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A fresh clone-like copy of the repo with tiny params, after one full `dvc repro`."""
    root = study_repo(tmp_path_factory.mktemp("study"), STUDY, ("learned", "control", "joint"))
    first = run_in(["dvc", "repro"], root)
    return root, first.stdout


def ran_stages(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def test_repro_runs_every_stage_and_writes_the_conclusion(study):
    root, output = study
    stages = ran_stages(output)
    assert {"prepare", "train@pix2pix-0", "predict@unet_ce-0", "ensemble@0", "evaluate@0", "report"} <= stages
    conclusion = (root / "reports" / "synthetic-cpu" / "conclusion.md").read_text()
    assert "## 3. Can pix2pix and unet_ce_adv be trained end-to-end" in conclusion  # the adversarial members
    for name in ("members.csv", "ensembles.csv", "hypothesis.csv", "members.tex", "qualitative.png"):
        assert (root / "reports" / "synthetic-cpu" / name).exists(), name
    metrics = json.loads((root / "runs" / "seed0" / "metrics.json").read_text())
    assert set(metrics) == set(MODELS)
    shown = run_in(["dvc", "metrics", "show", "--json"], root).stdout
    assert "pix2pix" in shown


def test_the_plans_disk_is_what_the_study_left(study):
    """`seg-p2p plan`'s disk against `du` of what the study wrote, DVC's cache with it (one `du` call counts a
    hard-linked file once), before anything else runs in the repo."""
    import subprocess

    root, _ = study
    planned = json.loads(run_in([str(BIN / "seg-p2p"), "plan", "--json"], root).stdout)["total"]["disk_bytes"]
    paths = [name for name in ("data", "runs", "reports", ".dvc/cache", "mlruns", "mlflow.db") if (root / name).exists()]
    used = int(subprocess.run(["du", "-scb", *paths], cwd=root, capture_output=True, text=True,
                              check=True).stdout.splitlines()[-1].split()[0])
    assert abs(planned - used) <= 0.1 * used, (planned, used)


def test_mlflow_holds_one_parent_with_a_nested_run_per_stage_and_model(study):
    from mlflow.tracking import MlflowClient

    root, _ = study
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("seg_p2p").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.tags["experiment"] == "synthetic-cpu" and "delta_vs_control.joint" in parent.data.metrics
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert {f"evaluate/{m}" for m in MODELS} | {"train/pix2pix", "train/reference", "ensemble/mean", "ensemble/joint",
                                               "report"} \
        <= set(children)
    for model in MODELS:
        run = children[f"evaluate/{model}"]
        assert run.data.tags["stage"] == "evaluate" and run.data.tags["seed"] == "0"
        assert 0 <= run.data.metrics["test_miou"] <= 1 and run.data.metrics["params_inference"] > 0
    assert "best_val_miou" not in children["ensemble/learned"].data.metrics  # no val split of its own
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "conclusion")}
    assert "conclusion/conclusion.md" in artifacts


def test_second_repro_does_nothing(study):
    root, _ = study
    output = run_in(["dvc", "repro"], root).stdout
    assert ran_stages(output) == set()


def test_changing_one_member_reruns_only_what_depends_on_it(study):
    root, _ = study
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["members"]["unet_l1"]["optimizer"]["lr"] = 0.002  # the cheapest member to retrain
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = run_in(["dvc", "repro"], root).stdout
    stages = ran_stages(output)
    # the reference too: its width and epochs are set by every member's settings (seg_p2p.budget)
    assert {"train@unet_l1-0", "predict@unet_l1-0", "reference@0", "ensemble@0", "evaluate@0", "report"} <= stages
    assert not {"prepare", "train@pix2pix-0", "train@unet_ce-0", "predict@pix2pix-0", "predict@unet_ce-0"} & stages


def test_editing_one_strategy_reruns_only_that_strategy_and_what_reads_it(study):
    """DVC reruns the seed's ensemble stage; inside it only the edited strategy runs (the others' identities are
    unchanged), then evaluate and report."""
    root, _ = study
    path = root / "ensembles" / "control.yaml"
    path.write_text(path.read_text() + "fusion: {hidden: 16, layers: 3, use_photo: false, lr: 0.001}\n")
    result = run_in(["dvc", "repro"], root)
    stages = ran_stages(result.stdout)
    assert stages == {"ensemble@0", "evaluate@0", "report"}
    log = result.stdout + result.stderr
    assert "seed 0: control done" in log
    for name in ("mean", "learned", "joint"):
        assert f"seed 0: {name} unchanged since it ran, kept" in log
    assert ran_stages(run_in(["dvc", "repro"], root).stdout) == set()


def plots_page(root) -> Path:
    run_in(["dvc", "plots", "show"], root)
    return root / "dvc_plots" / "index.html"


def test_the_plots_page_carries_the_scripts_dvc_would_load_from_a_cdn(study):
    """The versions dvc_render's vega renderer names, inline, and no script from the network."""
    from dvc_render.vega import VegaRenderer

    page = plots_page(study[0]).read_text()
    assert "<script src" not in page and "cdn." not in page.split("-->", 1)[1]
    for name, version in re.findall(r"npm/([a-z-]+)@([0-9.]+)", VegaRenderer.SCRIPTS):
        assert f"<script>/* {name} {version} */" in page, (name, version)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium (.ci/run installs Debian's)")
def test_the_plots_page_renders_its_charts_with_the_network_off(study):
    """Headless Chromium in a network namespace of its own (no interface but loopback): every chart is drawn."""
    page = plots_page(study[0])
    result = subprocess.run(["unshare", "--net", "--map-root-user", shutil.which("chromium"), "--headless",
                             "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000", "--dump-dom",
                             page.as_uri()], capture_output=True, text=True, timeout=300)
    charts = page.read_text().count("vegaEmbed('#")
    assert charts == 2 and result.stdout.count("<canvas") == charts, result.stderr[-2000:]


def test_exp_run_queues_experiments_as_dvc_experiments(study):
    root, _ = study
    for lr in ("0.003", "0.004"):
        delta = root / "experiments" / f"lr-{lr[-1]}.yaml"  # a plain name: it becomes a folder
        delta.write_text(f"name: lr-{lr[-1]}\nmembers:\n  unet_ce:\n    optimizer:\n      lr: {lr}\n")
        run_in([str(BIN / "seg-p2p"), "exp", "run", str(delta), "--queue"], root)
    status = run_in(["dvc", "queue", "status"], root).stdout
    assert status.count("Queued") == 2, status
    run_in(["dvc", "queue", "remove", "--all"], root)
