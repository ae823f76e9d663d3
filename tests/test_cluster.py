"""`seg-p2p cluster run` on a real single-node SLURM (.ci/local-slurm: 2 CPUs, job accounting, two stand-in GPUs).

The tiny study runs three ways: `dvc repro` (the reference), `cluster run` logging to a real `mlflow server`, and
`cluster run` with a training cancelled mid-run and then submitted again; the results must be the same, and the
jobs of independent stages must overlap. Skipped where no SLURM answers (`sinfo`), with the reason.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from conftest import BIN, ONE_THREAD, run_in, study_repo, tiny_project

KINDS = ("code", "prepare", "train", "predict", "reference", "ensemble", "evaluate", "report")
ONE_CPU_JOBS = {kind: {"cpus": 1, "mem_gb": 1, "time_min": 30} for kind in KINDS}  # what the local SLURM offers
# conftest's tiny params on one CPU per job; 32 training images and 6 epochs, so that a training is long enough
# to be cancelled after its first checkpoint; three strategies (fixed, stacked, joint) cut to one epoch.
STUDY = {"data": {"synthetic": {"num_train": 32}},
         "train": {"n_epochs": 4, "n_epochs_decay": 2, "val_every": 2, "sample_every": 6},
         "strategies": ["mean", "learned", "joint"],
         # no budget-matched network: its training (the members' FLOPs summed) held one of the node's 2 CPUs while
         # the strategies waited, so whether two strategies overlapped depended on when it ran (test_budget tests it)
         "reference": None,
         "cluster": {"poll_seconds": 1, "resources": ONE_CPU_JOBS}}
SHORT = ("learned", "joint")
SEG_P2P = str(BIN / "seg-p2p")


def slurm_up() -> bool:
    if shutil.which("sbatch") is None or shutil.which("sacct") is None:
        return False
    result = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return result.returncode == 0 and any(s in result.stdout for s in ("idle", "mixed", "allocated"))


def on_slurm(test):
    """Marks a test that submits to SLURM (slow; skipped without one). The plan, the local executor and the
    refusals need none."""
    reason = "no SLURM answers here (sbatch, sacct, an idle node): start one with .ci/local-slurm"
    return pytest.mark.slow(pytest.mark.skipif(not slurm_up(), reason=reason)(test))


def cluster(args: list[str], cwd: Path, uri: str | None = None, check: bool = True, timeout: int = 900):
    env = {**os.environ, **ONE_THREAD, "PATH": f"{BIN}:{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": uri or f"sqlite:///{cwd}/mlflow.db"}
    result = subprocess.run([SEG_P2P, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode:
        raise AssertionError(f"{args} failed:\n{result.stderr[-4000:]}")
    return result


def without_timing(report: Path) -> dict[str, list[dict]]:
    """Every conclusion table of a report, without its wall-clock columns (seconds, ms)."""
    tables = {}
    for path in sorted(report.glob("*.csv")):
        with open(path, newline="") as handle:
            tables[path.name] = [{k: v for k, v in row.items() if "seconds" not in k and "ms" not in k.split("_")}
                                 for row in csv.DictReader(handle)]
    return tables


def submission(root: Path) -> dict[str, dict]:
    return {job["name"]: job for job in json.loads((root / ".cluster" / "submission.json").read_text())["jobs"]}


def accounting(job_ids: list[str]) -> dict[str, tuple[str, str, str]]:
    """sacct's (state, start, end) of each job."""
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State,Start,End", "-j", ",".join(job_ids)],
                         capture_output=True, text=True, check=True).stdout
    return {job: (state.split()[0], start, end) for job, state, start, end in
            (line.split("|") for line in out.splitlines())}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The tiny study by `dvc repro`."""
    root = study_repo(tmp_path_factory.mktemp("reference"), STUDY, SHORT)
    run_in(["dvc", "repro"], root)
    return root


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """A real `mlflow server` (its own sqlite backend and artifact store) on a free loopback port."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{folder}/server.db",
                               "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=open(folder / "server.log", "w"))
    uri = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        raise AssertionError((folder / "server.log").read_text()[-2000:])
    yield uri
    server.terminate()
    server.wait(30)


@pytest.fixture(scope="module")
def clustered(tmp_path_factory, tracking_server) -> tuple[Path, str]:
    """The same study by `seg-p2p cluster run`, its stages logging to the tracking server."""
    root = study_repo(tmp_path_factory.mktemp("cluster"), STUDY, SHORT)
    result = cluster(["cluster", "run"], root, uri=tracking_server)
    return root, result.stderr


@on_slurm
def test_the_cluster_gives_the_results_of_dvc_repro_and_leaves_nothing_to_do(reference, clustered):
    root, output = clustered
    assert "done in" in output
    for seed_file in ("metrics.json", "per_class_iou.json"):
        assert (root / "runs" / "seed0" / seed_file).read_bytes() == \
            (reference / "runs" / "seed0" / seed_file).read_bytes(), seed_file
    ours, theirs = without_timing(root / "reports" / "synthetic-cpu"), without_timing(
        reference / "reports" / "synthetic-cpu")
    assert ours.keys() == theirs.keys() and "hypothesis.csv" in ours
    assert ours == theirs
    assert "Running stage" not in run_in(["dvc", "repro"], root).stdout  # dvc.lock records every stage
    shown = json.loads(run_in(["dvc", "metrics", "show", "--json"], root).stdout)
    assert "joint" in json.dumps(shown)
    again = cluster(["cluster", "run"], root, check=True)
    assert "nothing to submit" in again.stderr


@on_slurm
def test_independent_stages_ran_side_by_side_each_on_its_own_gpu(clustered):
    root, _ = clustered
    jobs = submission(root)
    trains = [stage for stage in jobs if stage.startswith("train@")]
    times = accounting([jobs[stage]["job_id"] for stage in trains])

    def span(stage):
        _, start, end = times[jobs[stage]["job_id"]]
        return datetime.fromisoformat(start), datetime.fromisoformat(end)

    together = [(a, b) for i, a in enumerate(trains) for b in trains[i + 1:]
                if span(a)[0] < span(b)[1] and span(b)[0] < span(a)[1]]
    assert together, {stage: span(stage) for stage in trains}
    for a, b in together:
        placed = [json.loads((root / "runs" / "seed0" / "members" / s.split("@")[1].rsplit("-", 1)[0] / "train" /
                              "summary.json").read_text())["placement"] for s in (a, b)]
        assert placed[0]["cuda_visible_devices"] != placed[1]["cuda_visible_devices"], placed
        assert all(p["threads"] == 1 and p["slurm_job_id"] == jobs[s]["job_id"] for p, s in zip(placed, (a, b)))


@on_slurm
def test_strategies_of_one_seed_ran_side_by_side_each_on_its_own_gpu(clustered):
    """An ensemble stage is a job per strategy: two of them overlap in sacct's times, on different stand-in GPUs
    (each job's log names its CUDA_VISIBLE_DEVICES)."""
    root, _ = clustered
    jobs = submission(root)
    strategies = [name for name in jobs if name.startswith("ensemble@0/")]
    assert sorted(strategies) == [f"ensemble@0/{s}" for s in sorted(STUDY["strategies"])]
    times = accounting([jobs[name]["job_id"] for name in strategies])

    def span(name):
        _, start, end = times[jobs[name]["job_id"]]
        return datetime.fromisoformat(start), datetime.fromisoformat(end)

    def devices(name):
        log = Path(jobs[name]["stdout"]).read_text()
        return log.split("CUDA_VISIBLE_DEVICES=")[1].split(",")[0]

    together = [(a, b) for i, a in enumerate(strategies) for b in strategies[i + 1:]
                if span(a)[0] < span(b)[1] and span(b)[0] < span(a)[1]]
    assert together, {name: span(name) for name in strategies}
    assert all(devices(a) != devices(b) for a, b in together), {name: devices(name) for name in strategies}


@on_slurm
def test_stages_log_to_the_tracking_server_under_one_parent(clustered, tracking_server):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_server)
    runs = client.search_runs([client.get_experiment_by_name("seg_p2p").experiment_id])
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert len(parents) == 1, [run.info.run_name for run in parents]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(runs) - 1
    names = {run.info.run_name for run in children}
    assert {"train/pix2pix", "train/unet_l1", "train/unet_ce", "ensemble/joint", "evaluate/unet_ce", "report"} <= names
    assert all(run.info.status == "FINISHED" for run in runs), {r.info.run_name: r.info.status for r in runs}
    trained = [run for run in children if run.info.run_name.startswith("train/")]
    assert all(run.data.tags.get("seg_p2p.slurm_job_id") and "seg_p2p.cuda_visible_devices" in run.data.tags
               for run in trained)


@on_slurm
def test_two_experiments_run_at_once_in_their_own_workspaces(clustered):
    root, _ = clustered
    processes = []
    for lr in ("0.003", "0.004"):
        delta = root / "experiments" / f"lr-{lr[-1]}.yaml"
        delta.write_text(f"name: lr-{lr[-1]}\nmembers:\n  unet_l1:\n    optimizer:\n      lr: {lr}\n")
        env = {**os.environ, **ONE_THREAD, "PATH": f"{BIN}:{os.environ['PATH']}",
               "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db"}
        processes.append(subprocess.Popen([SEG_P2P, "exp", "run", str(delta), "--cluster"], cwd=root, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [process.communicate(timeout=900) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], [err[-3000:] for _, err in outputs]
    for _, err in outputs:  # only what the new learning rate changes reruns (the plan before it shows every stage)
        submitted = err.split("stages out of date")[1]
        assert "train@unet_l1-0" in submitted and "train@pix2pix-0" not in submitted and "prepare " not in submitted
    ids = [[job["job_id"] for job in json.loads(
        (root / ".cluster" / "workspaces" / f"lr-{n}" / ".cluster" / "submission.json").read_text())["jobs"]]
        for n in "34"]
    times = accounting(ids[0] + ids[1])
    start = [min(datetime.fromisoformat(times[i][1]) for i in group) for group in ids]
    end = [max(datetime.fromisoformat(times[i][2]) for i in group) for group in ids]
    assert start[0] < end[1] and start[1] < end[0], (start, end)  # the two experiments overlapped
    shown = json.loads(run_in(["dvc", "exp", "show", "--json"], root).stdout)
    names = {exp.get("name") for entry in shown for exp in entry.get("experiments") or []}
    assert {"lr-3", "lr-4"} <= names, names
    prepared = root / ".cluster" / "workspaces" / "lr-3" / "data" / "prepared" / "spec.json"
    assert prepared.stat().st_nlink > 1  # linked from the shared cache, not copied


@on_slurm
def test_a_cancelled_training_stops_its_dependents_and_resubmitting_finishes_the_study(tmp_path, reference):
    import torch

    root = study_repo(tmp_path / "study", STUDY, SHORT)
    env = {**os.environ, **ONE_THREAD, "PATH": f"{BIN}:{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db"}
    client = subprocess.Popen([SEG_P2P, "cluster", "run"], cwd=root, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    last = root / "runs" / "seed0" / "members" / "unet_ce" / "train" / "checkpoints" / "last.pt"
    deadline = time.time() + 600
    while not last.exists() and time.time() < deadline and client.poll() is None:
        time.sleep(0.2)
    victim = submission(root)["train@unet_ce-0"]
    subprocess.run(["scancel", victim["job_id"]], check=True)
    _, stderr = client.communicate(timeout=600)
    assert client.returncode == 1, stderr[-3000:]
    error = [line for line in stderr.splitlines() if line.startswith("seg-p2p: error:")]
    assert len(error) == 1 and "train@unet_ce-0" in error[0] and victim["job_id"] in error[0] \
        and victim["stderr"] in error[0], error
    assert "Traceback" not in stderr
    epoch = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
    assert 1 <= epoch < 6  # cut mid-run
    jobs = submission(root)
    states = accounting([job["job_id"] for job in jobs.values()])
    for stage in ("predict@unet_ce-0", "ensemble@0/mean", "ensemble@0/learned", "ensemble@0/joint", "evaluate@0",
                  "report", "record"):
        state, start, _ = states[jobs[stage]["job_id"]]
        assert state == "CANCELLED" and start in ("None", "Unknown"), (stage, state, start)  # never started
    assert states[jobs["train@pix2pix-0"]["job_id"]][0] == "COMPLETED"

    again = cluster(["cluster", "run"], root)
    assert "recorded" in again.stderr and "train@pix2pix-0" not in again.stderr.split("stages out of date")[1]
    resumed = submission(root)["train@unet_ce-0"]
    assert "resuming from" in Path(resumed["stderr"]).read_text()
    assert (root / "runs" / "seed0" / "metrics.json").read_bytes() == \
        (reference / "runs" / "seed0" / "metrics.json").read_bytes()
    assert "nothing to submit" in cluster(["cluster", "run"], root).stderr


def two_stage_project(root: Path, cluster_settings: dict) -> Path:
    """A DVC project of two small stages (prepare, then report), its `cluster:` settings laid over tiny params."""
    tiny_project(root, {"cluster": cluster_settings})
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "prepare": {"cmd": "echo data > a.txt", "outs": ["a.txt"]},
        "report": {"cmd": "cat a.txt > b.txt", "deps": ["a.txt"], "outs": ["b.txt"]}}}))
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        run_in(command, root)
    return root


def test_the_local_executor_runs_the_pipeline_with_dvc_repro(tmp_path):
    """No SLURM asked for: one local job runs `dvc repro` (submitit's local executor), with the same client."""
    root = two_stage_project(tmp_path, {"executor": "local", "poll_seconds": 1})
    result = cluster(["cluster", "run"], root)
    assert "local executor" in result.stderr and (root / "b.txt").read_text() == "data\n"
    assert "nothing to submit" in cluster(["cluster", "run"], root).stderr


def queued_from(root: Path) -> dict[str, str]:
    """Job id -> state of the jobs SLURM's controller knows (waiting, running, or ended within MinJobAge) that were
    submitted from `root` (squeue's %Z: where sbatch ran)."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i|%T|%Z"], capture_output=True, text=True,
                         check=True).stdout
    return {job: state for job, state, where in (line.split("|") for line in out.splitlines()) if where == str(root)}


def node_cpus() -> int:
    return max(int(cpus) for cpus in subprocess.run(["sinfo", "-h", "-N", "-o", "%c"], capture_output=True, text=True,
                                                    check=True).stdout.split())


@on_slurm
def test_a_request_no_node_can_meet_is_refused_before_any_job_is_submitted(tmp_path):
    most = node_cpus()
    resources = {**ONE_CPU_JOBS, "prepare": {**ONE_CPU_JOBS["prepare"], "cpus": most + 2}}
    root = two_stage_project(tmp_path, {"executor": "slurm", "resources": resources})
    result = cluster(["cluster", "run"], root, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("seg-p2p: error: cluster.resources.prepare.cpus: prepare asks "
                                                   f"for {most + 2} CPUs, but no node of partition "), lines
    assert f"has more than {most} (sinfo)" in lines[0]
    assert not (root / ".cluster").exists() and queued_from(root) == {}


@on_slurm
def test_a_job_that_can_never_start_is_reported_within_one_poll_and_its_jobs_are_cancelled(tmp_path):
    """More tasks of one CPU than the node has CPUs, asked through cluster.sbatch (which the check before
    submitting does not read): SLURM takes the job and keeps it pending with PartitionConfig, which never clears."""
    root = two_stage_project(tmp_path, {"executor": "slurm", "poll_seconds": 1, "resources": ONE_CPU_JOBS,
                                        "sbatch": {"ntasks": node_cpus() + 1}})
    result = cluster(["cluster", "run"], root, check=False, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    jobs = submission(root)
    error = [line for line in result.stderr.splitlines() if line.startswith("seg-p2p: error:")]
    assert len(error) == 1 and f"prepare (job {jobs['prepare']['job_id']}) can never start" in error[0], error
    assert "the scheduler holds it for PartitionConfig, which does not clear by itself" in error[0], error
    polls = [line for line in result.stderr.splitlines() if " pending" in line and " of 3 jobs (" in line]
    assert len(polls) == 1, polls  # the first poll saw it
    assert queued_from(root) == {job["job_id"]: "CANCELLED" for job in jobs.values()}  # nothing left waiting


def test_the_plan_shows_each_stage_job_request_and_submits_nothing(tmp_path):
    """`seg-p2p plan` replaces `cluster run --dry-run`: every stage of the study with what its job asks for."""
    tiny_project(tmp_path, {"cluster": {"resources": {"train": {"cpus": 3}}}})
    result = cluster(["plan"], tmp_path)
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[2:] if "@" in line}
    assert rows["train@pix2pix-0"].endswith("3 cpus, 1 gpus, 32G, 1440m"), result.stdout
    assert rows["evaluate@0"].endswith("4 cpus, 0 gpus, 16G, 240m")
    assert not (tmp_path / ".cluster").exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize("delta, fragment", [
    ({"cluster": {"resources": {"train": {"gpu": 1}}}}, "unknown key 'cluster.resources.train.gpu'"),
    ({"cluster": {"resources": {"predict": {"gpus": 0}}}, "train": {"device": "auto"}},
     "cluster.resources.predict.gpus: 0 for a stage that runs on train.device 'auto'"),
    ({"cluster": {"sbatch": {"time": "10:00"}}}, "cluster.sbatch: 'time' is set by seg-p2p"),
    ({"cluster": {"executor": "slurm"}}, "cluster.executor: slurm, but sbatch is not found"),
])
def test_bad_cluster_settings_are_refused_before_anything_is_submitted(tmp_path, delta, fragment):
    tiny_project(tmp_path, delta)
    env = {**os.environ, "PATH": str(BIN)}  # this environment's scripts only: no sbatch on PATH
    result = subprocess.run([SEG_P2P, "cluster", "run"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / ".cluster").exists()

