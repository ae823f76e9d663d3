"""Faults during training: SIGKILL at random moments, SIGTERM/SIGINT, unwritable output, full disk,
an unreachable or broken tracking store, NaN losses. Tiny sizes (conftest.tiny_params: 32 px, 12 images,
ngf 8) on the CPU.

The training subprocesses run `seg-p2p` exactly as a user (or `dvc repro`) would.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import (CLI, ONE_THREAD, comparable_summary, metric_steps, read_history, tiny_params, tiny_settings,
                      tracked_runs, train_argv)

TEMP_NAME = re.compile(r"^\..+\.tmp$")  # atomic.py's `.NAME.PID.XXXX.tmp`

# Every test tracks into its own store, copied from the ready-made one; in-process runs use one thread.
pytestmark = pytest.mark.usefixtures("one_thread", "mlflow_store")


def messages(stderr: str) -> list[str]:
    """The lines seg-p2p itself wrote (progress bars redraw with \\r; MLflow logs its own lines)."""
    lines = [part.strip() for line in stderr.splitlines() for part in line.split("\r")]
    return [line for line in lines if line.startswith("seg-p2p:")]


def assert_one_line_error(stderr: str, *fragments: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in messages(stderr) if not line.startswith("seg-p2p: warning:")]
    assert len(errors) == 1, stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def mlflow_runs(tmp_path: Path, stage: str = "train") -> list:
    return tracked_runs(tmp_path / "mlflow.db", stage)


def assert_outputs_complete(out: Path) -> list[Path]:
    """Every file under `out` is whole: .pt loads with weights_only, JSON/CSV parse, PNGs decode.
    Returns the leftover temp files (hidden, never read as output)."""
    import torch
    from PIL import Image

    temps = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        if any(TEMP_NAME.match(part) for part in path.relative_to(out).parts):
            temps.append(path)
            continue
        if path.suffix == ".pt":
            state = torch.load(path, map_location="cpu", weights_only=True)
            assert isinstance(state, dict) and ("model" in state or state.get("complete")), path  # a record once complete
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".csv":
            rows = list(csv.reader(path.open(newline="")))
            assert rows and all(len(row) == len(rows[0]) for row in rows), path
        elif path.suffix == ".png":
            with Image.open(path) as image:
                image.verify()
        else:
            raise AssertionError(f"unexpected output {path}")
    return temps


def assert_same_weights(a: Path, b: Path) -> None:
    import torch

    left = torch.load(a, map_location="cpu", weights_only=True)["model"]
    right = torch.load(b, map_location="cpu", weights_only=True)["model"]
    assert left.keys() == right.keys()
    for key in left:
        assert torch.equal(left[key], right[key]), f"{a} and {b} differ in {key}"


KILL_EPOCHS = {"n_epochs": 3, "n_epochs_decay": 2}  # 5 epochs: room for kills in different epochs


@pytest.fixture(scope="module")
def reference(workspace, tmp_path_factory, mlflow_template) -> tuple[Path, float]:
    """The uninterrupted 5-epoch pix2pix run (seed 0, in this process) and its mean seconds per epoch."""
    from seg_p2p.cli import main

    folder = tmp_path_factory.mktemp("reference")
    params = tiny_params(workspace, {"train": KILL_EPOCHS}, name="kill_params.yaml")
    shutil.copyfile(mlflow_template, folder / "mlflow.db")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        main(train_argv(workspace, folder / "train", params=params))
    with open(folder / "train" / "history.csv", newline="") as handle:
        seconds = [float(row["seconds"]) for row in csv.DictReader(handle)]
    return folder / "train", sum(seconds) / len(seconds)


class Child:
    """`seg-p2p ...` in a subprocess whose stderr is read as it comes (to time signals by its progress)."""

    def __init__(self, argv: list[str], cwd: Path, env: dict | None = None):
        self.proc = subprocess.Popen([*CLI, *argv], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env={**os.environ, **ONE_THREAD, **(env or {})})
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        fd = self.proc.stderr.fileno()
        for chunk in iter(lambda: os.read(fd, 65536), b""):
            self.chunks.append(chunk)

    @property
    def stderr(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")

    def wait_for(self, text: str, timeout: float = 120) -> bool:
        """Wait until `text` shows on stderr (True) or the process ends first (False)."""
        deadline = time.monotonic() + timeout
        while text not in self.stderr:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return text in self.stderr
            time.sleep(0.005)
        return True

    def wait(self, timeout: float = 180) -> int:
        code = self.proc.wait(timeout)
        self.reader.join(10)
        return code


# ---- 1. SIGKILL at random moments ------------------------------------------------------------------------

@pytest.mark.slow
def test_sigkill_at_random_moments_resumes_to_the_uninterrupted_result(workspace, reference, tmp_path):
    """4 SIGKILLs in 4 random distinct epochs (in order), each at a random delay after that epoch's progress
    bar appears (up to 1.5 epochs: some land in validation or checkpoint writing); the same command is rerun
    until it finishes. Every kill leaves only whole files; every rerun resumes after the last complete
    epoch; the result equals the uninterrupted run's exactly, and so does its MLflow record: one run, reopened
    by every resume, with every epoch's metrics once (a kill between checkpoint and MLflow call included)."""
    import torch

    ref_out, epoch_seconds = reference
    params = workspace / "kill_params.yaml"
    total = sum(KILL_EPOCHS.values())
    out = tmp_path / "train"
    rng = random.Random(20240607)
    targets = sorted(rng.sample(range(1, total + 1), 4))
    kills, resumes, launches = [], [], 0
    done = 0  # epoch of checkpoints/last.pt when the previous process died
    while True:
        launches += 1
        assert launches <= 12, "the run never finished"
        child = Child(train_argv(workspace, out, params=params), workspace)
        if targets:
            epoch = max(targets.pop(0), done + 1)
            delay = rng.uniform(0.0, 1.5) * epoch_seconds
            if child.wait_for(f"epoch {epoch}/{total}"):
                time.sleep(delay)
                if child.proc.poll() is None:
                    child.proc.send_signal(signal.SIGKILL)
                    kills.append((epoch, round(delay, 3)))
        code = child.wait()
        stderr = child.stderr
        found = re.findall(r"resuming from (\S+) after epoch (\d+)", stderr)
        if done:
            assert found == [(str(out / "checkpoints" / "last.pt"), str(done))], stderr
            resumes.append(done)
        else:
            assert not found, stderr
        if code == 0:
            break
        assert code == -signal.SIGKILL, stderr
        # Nothing half-written: every output loads; temp files are hidden `.NAME.PID.XXXX.tmp`.
        assert_outputs_complete(out)
        last = out / "checkpoints" / "last.pt"
        done = torch.load(last, weights_only=True)["epoch"] if last.exists() else 0
        if done:
            assert len(read_history(out / "history.csv")) in (done, done + 1)  # written just before last.pt
            assert torch.load(out / "checkpoints" / "best.pt", weights_only=True)["epoch"] <= done + 1
    print(f"SIGKILL (epoch, seconds after its start): {kills}; {launches} launches; resumed after {resumes}")
    assert len(kills) >= 3, f"only {len(kills)} kills landed before the run finished"
    assert len(set(resumes)) >= 2, f"resumed after epochs {resumes}: kills not spread over the run"
    assert resumes == sorted(resumes)  # never goes back
    assert assert_outputs_complete(out) == []  # the finished run swept the killed runs' temp files
    assert read_history(out / "history.csv") == read_history(ref_out / "history.csv")
    assert comparable_summary(out / "summary.json") == comparable_summary(ref_out / "summary.json")
    assert_same_weights(out / "checkpoints" / "best.pt", ref_out / "checkpoints" / "best.pt")

    runs = mlflow_runs(tmp_path)
    finished = [run for run in runs if run.info.status == "FINISHED"]
    # A kill within epoch 1 leaves no checkpoint to name the run: the next start marks it KILLED, none stays RUNNING.
    assert len(finished) == 1 and all(run.info.status == "KILLED" for run in runs if run not in finished), \
        [run.info.status for run in runs]
    (uninterrupted,) = tracked_runs(ref_out.parent / "mlflow.db")
    for key in ("val_miou", "loss_g_l1", "loss_d", "lr"):
        steps = metric_steps(tmp_path / "mlflow.db", finished[0].info.run_id, key)
        assert [step for step, _ in steps] == list(range(1, total + 1)), key  # every epoch once
        assert steps == metric_steps(ref_out.parent / "mlflow.db", uninterrupted.info.run_id, key)


def test_stale_temp_files_are_ignored_and_cleaned(tmp_path):
    """What a SIGKILL leaves mid-write (atomic.py's temp files) is never read and goes on the next write."""
    from seg_p2p.atomic import atomic_dir, remove_stale_temps_under, write_text

    target = tmp_path / "history.csv"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".history.csv.{dead.pid}.abcd1234.tmp"
    stale.write_text("half-writ")
    alive = tmp_path / f".history.csv.{os.getppid()}.abcd1234.tmp"  # a live writer's: left alone
    alive.write_text("in progress")
    old_format = tmp_path / ".history.csv.x1y2z3w4.tmp"
    old_format.write_text("half")
    write_text(target, "a,b\n1,2\n")
    assert target.read_text() == "a,b\n1,2\n"
    assert not stale.exists() and not old_format.exists() and alive.exists()

    staging = tmp_path / f".prepared.{dead.pid}.qwer5678.tmp"
    staging.mkdir()
    (staging / "spec.json").write_text("{")
    with atomic_dir(tmp_path / "prepared") as folder:
        (folder / "spec.json").write_text("{}")
    assert not staging.exists() and (tmp_path / "prepared" / "spec.json").read_text() == "{}"

    nested = tmp_path / "run" / "checkpoints"
    nested.mkdir(parents=True)
    (nested / f".last.pt.{dead.pid}.zxcv0000.tmp").write_bytes(b"\x80")
    remove_stale_temps_under(tmp_path / "run")
    assert list(nested.iterdir()) == []


# ---- 2. SIGTERM / SIGINT ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_sigterm_stops_cleanly_keeps_checkpoint_and_marks_run_killed(workspace, tmp_path):
    """As DVC or a scheduler stops a job: a real process, SIGTERM after its first checkpoint."""
    import torch

    out = tmp_path / "train"
    child = Child(train_argv(workspace, out), workspace)
    assert child.wait_for("epoch 1/3"), child.stderr
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "last.pt").exists() and child.proc.poll() is None:
        assert time.monotonic() < deadline, child.stderr
        time.sleep(0.01)
    child.proc.send_signal(signal.SIGTERM)
    code = child.wait()
    if code == 0:
        pytest.skip("the run finished before the signal arrived (machine too fast for this tiny run)")
    assert code == 128 + signal.SIGTERM, child.stderr
    line = assert_one_line_error(child.stderr, "interrupted (SIGTERM)", "run the same command again")
    assert line == messages(child.stderr)[-1]
    assert assert_outputs_complete(out) == []  # the interrupted write, if any, removed its temp file
    assert 1 <= torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epoch"] < 3
    assert [run.info.status for run in mlflow_runs(tmp_path)] == ["KILLED"]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_at_a_known_step_keeps_epoch_one(workspace, tmp_path, monkeypatch, capsys, signum):
    """Ctrl-C (or SIGTERM) at epoch 2, step 2, delivered in this process: exit 128 + signal, one line,
    epoch 1's checkpoint intact, MLflow run KILLED; the same command then resumes after epoch 1."""
    import torch

    import seg_p2p.engine as engine
    from seg_p2p.cli import main
    from seg_p2p.interrupts import _raise_interrupted

    real, steps = engine.train_step, {"n": 0}  # fit looks train_step up in the engine's globals

    def step(*args, **kwargs):
        steps["n"] += 1
        if steps["n"] == 5:
            os.kill(os.getpid(), signum)  # handled at the next bytecode: inside the training loop
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "train_step", step)
    out = tmp_path / "train"
    with pytest.raises(SystemExit) as exit_info:
        main(train_argv(workspace, out))
    assert exit_info.value.code == 128 + signum
    assert_one_line_error(capsys.readouterr().err, f"interrupted ({signal.Signals(signum).name})")
    for handled in (signal.SIGINT, signal.SIGTERM):  # both handlers restored
        assert signal.getsignal(handled) is not _raise_interrupted
    assert assert_outputs_complete(out) == []
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
    assert [run.info.status for run in mlflow_runs(tmp_path)] == ["KILLED"]
    monkeypatch.setattr(engine, "train_step", real)
    main(train_argv(workspace, out))
    assert "resuming from" in capsys.readouterr().err
    assert len(read_history(out / "history.csv")) == 3


def test_a_signal_held_by_nested_deferred_blocks_is_raised_when_the_outermost_ends():
    from seg_p2p.interrupts import Interrupted, deferred, interrupts_raise

    done = []
    with interrupts_raise(), pytest.raises(Interrupted) as raised:
        with deferred():
            with deferred():
                os.kill(os.getpid(), signal.SIGINT)  # handled at the next bytecode: held
                done.append("inner")
            done.append("outer")
    assert done == ["inner", "outer"]
    assert raised.value.signum == signal.SIGINT


@pytest.mark.slow
def test_a_signal_during_an_mlflow_call_waits_for_the_call(workspace, tmp_path, monkeypatch, capsys):
    """A signal that lands inside an MLflow call (one SQL transaction) is raised when the call has returned. Raised
    in its middle, it left the sqlite store locked by the process itself: marking the run KILLED then waited out
    the busy timeout and failed, with MLflow's traceback on stderr (seen once in CI's SIGTERM test)."""
    import mlflow

    from seg_p2p.cli import main

    real = mlflow.log_metrics

    def log_metrics(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # handled at the next bytecode: inside this call
        return real(*args, **kwargs)

    monkeypatch.setattr(mlflow, "log_metrics", log_metrics)
    with pytest.raises(SystemExit) as exit_info:
        main(train_argv(workspace, tmp_path / "train"))
    assert exit_info.value.code == 128 + signal.SIGTERM
    assert_one_line_error(capsys.readouterr().err, "interrupted (SIGTERM)")
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "KILLED"
    assert [step for step, _ in metric_steps(tmp_path / "mlflow.db", run.info.run_id, "lr")] == [1]  # epoch 1's


@pytest.mark.slow
def test_finished_run_is_resumed_only_into_the_same_inputs(workspace, tmp_path, capsys):
    """DVC keeps a stage's outputs (`persist`) and reruns it when its data changed: the finished
    checkpoint left there is resumed (nothing to do) only when the data are the same bytes."""
    import numpy as np
    import torch

    from seg_p2p.cli import main

    out = tmp_path / "train"
    main(train_argv(workspace, out, member="unet_l1"))
    weights = torch.load(out / "checkpoints" / "best.pt", weights_only=True)["model"]
    main(train_argv(workspace, out, member="unet_l1"))
    assert "after epoch 3" in capsys.readouterr().err
    assert len(read_history(out / "history.csv")) == 3

    changed = tmp_path / "workspace"
    shutil.copytree(workspace, changed)
    photos = np.load(changed / "data" / "train_photos.npy")
    photos[0] = 255 - photos[0]  # the ragged array's first value: image 0's top-left red
    np.save(changed / "data" / "train_photos.npy", photos)
    main(train_argv(changed, out, member="unet_l1"))
    assert "starting over" in capsys.readouterr().err
    assert len(read_history(out / "history.csv")) == 3
    assert assert_outputs_complete(out) == []
    retrained = torch.load(out / "checkpoints" / "best.pt", weights_only=True)["model"]
    assert any(not torch.equal(weights[k], retrained[k]) for k in weights)


def test_run_identity_covers_settings_code_and_inputs(tmp_path, monkeypatch):
    """The code part is the import closure of the run's module (seg_p2p.codedeps) in the package folder."""
    import seg_p2p.codedeps as codedeps
    from seg_p2p.fingerprint import fingerprint

    package, data = tmp_path / "fakepkg", tmp_path / "weights.pt"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "model.py").write_text("x = 1\n")
    (package / "report.py").write_text("y = 1\n")  # not imported by model.py: outside the run's code
    data.write_bytes(b"weights")
    monkeypatch.setattr(codedeps, "PACKAGE_ROOT", package)
    code = "fakepkg.model"
    first = fingerprint({"lr": 1e-3}, code=code, inputs=[data])
    assert fingerprint({"lr": 1e-3}, code=code, inputs=[data]) == first
    assert fingerprint({"lr": 2e-3}, code=code, inputs=[data]) != first
    data.write_bytes(b"other weights")
    assert fingerprint({"lr": 1e-3}, code=code, inputs=[data]) != first
    data.write_bytes(b"weights")
    (package / "report.py").write_text("y = 2\n")
    assert fingerprint({"lr": 1e-3}, code=code, inputs=[data]) == first
    (package / "model.py").write_text("x = 2\n")
    assert fingerprint({"lr": 1e-3}, code=code, inputs=[data]) != first


# ---- 3. unwritable output folder, full disk --------------------------------------------------------------

def test_output_under_a_regular_file_is_refused_before_training(workspace, tmp_path, capsys):
    """Works as root too (root ignores permissions, not a file standing where a folder must be)."""
    from seg_p2p.cli import main

    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file")
    out = blocker / "train"
    with pytest.raises(SystemExit) as exit_info:
        main(train_argv(workspace, out))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, str(out), "is a file", "choose another output folder")
    assert " epoch " not in err  # refused before training started
    assert mlflow_runs(tmp_path) == []  # ... and before any MLflow run


def test_read_only_output_folder_is_refused_before_training(workspace, tmp_path, capsys):
    from seg_p2p.cli import main

    parent = tmp_path / "read_only"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        if os.access(parent, os.W_OK):
            pytest.skip("running as root: permissions do not stop writes (see the regular-file and ENOSPC tests)")
        with pytest.raises(SystemExit) as exit_info:
            main(train_argv(workspace, parent / "train"))
    finally:
        parent.chmod(0o700)
    assert exit_info.value.code == 2
    assert_one_line_error(capsys.readouterr().err, str(parent / "train"), "not writable")
    assert list(parent.iterdir()) == []


def test_disk_full_mid_run_keeps_the_last_good_checkpoint(workspace, tmp_path, monkeypatch, capsys):
    """The second epoch's last.pt cannot be written (ENOSPC): exit 2, one line, epoch 1's checkpoint intact."""
    import torch

    from seg_p2p.cli import main

    out = tmp_path / "train"
    real_replace = os.replace
    writes = {"last.pt": 0}

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == "last.pt":
            writes["last.pt"] += 1
            if writes["last.pt"] == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(SystemExit) as exit_info:
        main(train_argv(workspace, out))
    assert exit_info.value.code == 2
    assert_one_line_error(capsys.readouterr().err, str(out / "checkpoints" / "last.pt"), "No space left",
                          "free disk space")
    assert assert_outputs_complete(out) == []  # the failed write's temp file is gone
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
    assert [run.info.status for run in mlflow_runs(tmp_path)] == ["FAILED"]


# ---- 4. tracking store unreachable or broken -------------------------------------------------------------

@pytest.mark.parametrize("store", ["http", "not_a_database"])
def test_tracking_store_failure_is_a_warning(workspace, tmp_path, monkeypatch, capsys, store):
    from seg_p2p.cli import main

    if store == "http":  # loopback, a port nothing listens on (discard); fail fast
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    else:
        junk = tmp_path / "junk.db"
        junk.write_bytes(random.Random(0).randbytes(4096))
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{junk}")
    out = tmp_path / "train"
    main(train_argv(workspace, out, member="unet_l1"))
    err = capsys.readouterr().err
    warnings = [line for line in messages(err) if line.startswith("seg-p2p: warning: MLflow tracking failed")]
    assert len(warnings) == 1, err
    assert "Traceback" not in err
    assert len(read_history(out / "history.csv")) == 3
    assert json.loads((out / "summary.json").read_text())["epochs"] == 3
    assert assert_outputs_complete(out) == []


def test_tracking_store_failing_mid_run_is_a_warning(workspace, tmp_path, monkeypatch, capsys):
    """The store accepts the run, then fails on a metric: training goes on, the next run tracks normally."""
    import mlflow

    from seg_p2p.cli import main

    real = mlflow.log_metrics
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionError("store went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(mlflow, "log_metrics", flaky)
    main(train_argv(workspace, tmp_path / "a", member="unet_l1"))
    err = capsys.readouterr().err
    assert sum("MLflow tracking failed" in line for line in messages(err)) == 1, err
    assert len(read_history(tmp_path / "a" / "history.csv")) == 3
    monkeypatch.setattr(mlflow, "log_metrics", real)
    main(train_argv(workspace, tmp_path / "b", member="unet_l1"))  # a second run in the same process
    assert "MLflow tracking failed" not in capsys.readouterr().err
    statuses = sorted(run.info.status for run in mlflow_runs(tmp_path))
    assert statuses == ["FAILED", "FINISHED"]


# ---- 5. NaN loss -----------------------------------------------------------------------------------------

def test_nan_loss_in_epoch_two_stops_with_the_last_good_checkpoint(workspace, tmp_path, monkeypatch, capsys):
    import torch

    from seg_p2p.cli import main
    from seg_p2p.models.pix2pix import Pix2Pix

    real = Pix2Pix.generator_losses
    steps = {"n": 0}

    def poisoned(self, batch, output):
        losses = real(self, batch, output)
        steps["n"] += 1
        if steps["n"] == 5:  # epoch 2 (3 steps per epoch), step 2
            losses["loss_g_l1"] = losses["loss_g_l1"] * float("nan")
        return losses

    monkeypatch.setattr(Pix2Pix, "generator_losses", poisoned)
    out = tmp_path / "train"
    with pytest.raises(SystemExit) as exit_info:
        main(train_argv(workspace, out))
    assert exit_info.value.code == 2
    line = assert_one_line_error(capsys.readouterr().err, "is nan", "at epoch 2, step 3",
                                 f"{out / 'checkpoints' / 'last.pt'} (epoch 1)", "lower the learning rate")
    assert re.search(r"loss_\w+ is nan", line), line
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
    assert len(read_history(out / "history.csv")) == 1
    assert not (out / "summary.json").exists()
    assert [run.info.status for run in mlflow_runs(tmp_path)] == ["FAILED"]


def test_diverging_learning_rate_stops_with_one_line(workspace, tmp_path, capsys):
    """As a user meets it: a learning rate so large the first epoch already diverges."""
    from seg_p2p.cli import main

    params = tiny_params(tmp_path, {"members": {"pix2pix": {"optimizer": {"lr": 1.0e30}}}})
    out = tmp_path / "train"
    with pytest.raises(SystemExit) as exit_info:
        main(train_argv(workspace, out, params=params))
    assert exit_info.value.code == 2
    assert_one_line_error(capsys.readouterr().err, "train/pix2pix: loss_", "at epoch 1", "no checkpoint was written")
    assert not (out / "checkpoints" / "last.pt").exists()
    assert [run.info.status for run in mlflow_runs(tmp_path)] == ["FAILED"]


# ---- 6. stored files damaged before a later stage reads them ---------------------------------------------------

@pytest.fixture(scope="module")
def finished_study(workspace, tmp_path_factory, mlflow_template) -> Path:
    """One seed of a tiny study, every stage run as dvc.yaml runs it: one member (unet_l1, one epoch) and `max`,
    under FOLDER/{data, runs, reports/study}, its params FOLDER/params.yaml."""
    from seg_p2p.cli import main

    folder = tmp_path_factory.mktemp("finished")
    shutil.copytree(workspace / "data", folder / "data")
    settings = tiny_settings({"train": {"n_epochs": 1, "n_epochs_decay": 0}, "strategies": ["max"]})
    settings["members"] = {"unet_l1": settings["members"]["unet_l1"]}
    settings["strategy_settings"] = {}
    settings["gan_pairs"] = {}  # its pairs name members this study lacks
    settings["reference"] = None  # the budget-matched network's files are checked in test_budget and test_pipeline
    (folder / "params.yaml").write_text(yaml.safe_dump(settings))
    shutil.copyfile(mlflow_template, folder / "mlflow.db")
    seed = folder / "runs" / "seed0"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        for argv in STAGES.values():
            main(stage_argv(folder, argv))
    assert (seed / "evaluate" / "max.json").is_file() and (folder / "reports" / "study" / "study.json").is_file()
    return folder


MEMBER = "runs/seed0/members/unet_l1"
STAGES = {  # every stage of the study as dvc.yaml runs it, and the commands that read back what they stored
    "train": ["train", "--member", "unet_l1", "--data", "data", "--out", f"{MEMBER}/train"],
    "predict": ["predict", "--member", "unet_l1", "--data", "data", "--checkpoint",
                f"{MEMBER}/train/checkpoints/best.pt", "--out", f"{MEMBER}/predict", "--split", "val",
                "--split", "test"],
    "ensemble": ["ensemble", "--data", "data", "--runs", "runs/seed0/members", "--out", "runs/seed0/ensembles"],
    "evaluate": ["evaluate", "--data", "data", "--runs", "runs/seed0", "--out", "runs/seed0/evaluate"],
    "report": ["report", "--data", "data", "--runs", "runs", "--out", "reports/study"],
}
READERS = {  # a command that reads the files of each stage; where it writes is new, so that nothing written shows
    "train": STAGES["train"][:-1] + ["new/train"],
    "resume": STAGES["train"],
    "predict": STAGES["predict"][:-5] + ["new/predict", "--split", "test"],
    "ensemble": STAGES["ensemble"][:-1] + ["new/ensembles"],
    "evaluate": STAGES["evaluate"],
    "report": STAGES["report"][:-1] + ["new/report"],
    "compare": ["report", "--compare", "reports/study", "--out", "new/comparison"],
    "segment": ["segment", "--model", MEMBER, "--data", "data", "--out", "new/labels", "data"],
}


def stage_argv(folder: Path, argv: list[str]) -> list[str]:
    """`argv` with its relative paths under `folder`, and folder's params.yaml."""
    return ["--params", str(folder / "params.yaml"),
            *(str(folder / arg) if "/" in arg or arg in ("data", "runs") else arg for arg in argv)]


def truncate(path: Path) -> None:
    """Cut short, as a full disk or an interrupted copy leaves it: its last quarter gone (an .npy keeps its header)."""
    path.write_bytes(path.read_bytes()[:max(path.stat().st_size * 3 // 4, 8)])


def cut_header(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:20])


def cut_last_field(path: Path) -> None:
    """A CSV cut inside its last row."""
    path.write_text(path.read_text().rstrip("\n").rsplit(",", 1)[0])


def grow_first_shape(path: Path) -> None:
    """A ragged array's shapes that disagree with its data: the first item one row taller."""
    shapes = json.loads(path.read_text())
    shapes[0][0] += 1
    path.write_text(json.dumps(shapes))


def drop_last_name(path: Path) -> None:
    path.write_text(json.dumps(json.loads(path.read_text())[:-1]))


def other_tallies(path: Path) -> None:
    import numpy as np

    np.save(path, np.zeros((2, 3, 3), np.int64))


DAMAGED = [  # (file, damage, the command that reads it, what the one line says besides the file)
    ("data/train_photos.npy", truncate, "train", ("truncated (", "run `dvc repro -f -s prepare` to write it again")),
    ("data/train_photos.npy", cut_header, "train", ("not a .npy array", "dvc repro -f -s prepare")),
    ("data/train_masks.json", grow_first_shape, "train", ("train_masks.npy: holds an array of shape",
                                                          "train_masks.json describes", "dvc repro -f -s prepare")),
    ("data/val_masks.json", truncate, "predict", ("not valid JSON", "dvc repro -f -s prepare")),
    ("data/test_names.json", drop_last_name, "ensemble", ("test_photos.json: its 4 photo shapes do not match",
                                                          "3 names", "dvc repro -f -s prepare")),
    ("data/train_masks.json", Path.unlink, "train", ("not a prepared dataset (missing train_masks.json)",)),
    ("data/spec.json", truncate, "segment", ("not valid JSON", "dvc repro -f -s prepare")),
    (f"{MEMBER}/predict/test_probs.npy", truncate, "ensemble", ("truncated (", "dvc repro -f -s predict")),
    (f"{MEMBER}/predict/test_probs.json", grow_first_shape, "ensemble", ("test_probs.npy: holds an array of shape",
                                                                         "dvc repro -f -s predict")),
    (f"{MEMBER}/predict/test_probs.json", Path.unlink, "ensemble", ("test_probs.json: missing",
                                                                    "dvc repro -f -s predict")),
    (f"{MEMBER}/predict/test_pred.npy", truncate, "evaluate", ("truncated (", "dvc repro -f -s predict")),
    (f"{MEMBER}/predict/test_pred.npy", Path.unlink, "evaluate", ("test_pred.npy: missing",)),
    ("runs/seed0/ensembles/max/predict/test_pred.npy", truncate, "evaluate", ("truncated (",  # after the member's
                                                                              "dvc repro -f -s ensemble")),
    ("runs/seed0/ensembles/max/predict/test_pred.json", grow_first_shape, "report",
     ("max/predict/test_pred.npy: holds an array of shape", "dvc repro -f -s ensemble")),
    (f"{MEMBER}/train/checkpoints/best.pt", truncate, "predict", ("not a readable seg_p2p checkpoint (truncated",
                                                                  "delete the run's checkpoints/ folder")),
    (f"{MEMBER}/train/checkpoints/best.pt", Path.unlink, "segment", ("holds no trained model",)),
    (f"{MEMBER}/train/checkpoints/last.pt", truncate, "resume", ("last.pt: not a readable seg_p2p checkpoint",)),
    (f"{MEMBER}/train/summary.json", truncate, "evaluate", ("not valid JSON", "delete the training's train/ folder",
                                                            "dvc repro train")),
    (f"{MEMBER}/train/history.csv", cut_last_field, "report", ("not a complete CSV table",
                                                               "delete the training's train/ folder")),
    (f"{MEMBER}/train/history.csv", Path.unlink, "report", ("history.csv: missing",)),
    ("runs/seed0/evaluate/unet_l1.json", truncate, "report", ("not valid JSON", "dvc repro -f -s evaluate")),
    ("runs/seed0/evaluate/max.json", Path.unlink, "report", ("max.json: missing", "dvc repro -f -s evaluate")),
    ("runs/seed0/evaluate/unet_l1_test_tallies.npy", truncate, "report", ("truncated (", "dvc repro -f -s evaluate")),
    ("runs/seed0/evaluate/max_test_tallies.npy", other_tallies, "report", ("shape (2, 3, 3), expected (4, 3, ",
                                                                           "dvc repro -f -s evaluate")),
    ("reports/study/members.csv", cut_last_field, "compare", ("not a complete CSV table", "rerun `dvc repro report`")),
    ("reports/study/study.json", truncate, "compare", ("not valid JSON", "rerun `dvc repro report`")),
]


def state_under(folder: Path) -> dict:
    return {path.relative_to(folder): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in folder.rglob("*") if path.is_file()}


@pytest.mark.parametrize("file, damage, reader, says", DAMAGED,
                         ids=[f"{Path(file).name} {damage.__name__} -> {reader}" for file, damage, reader, _
                              in DAMAGED])
def test_a_damaged_stored_file_is_one_line_naming_it_and_the_stage_that_writes_it(
        finished_study, tmp_path, capsys, file, damage, reader, says):
    """Each file a stage reads back, missing, cut short or disagreeing with its shapes: exit 2, one line naming it
    and what to rerun, before anything is written or tracked."""
    from seg_p2p.cli import main

    study = tmp_path / "study"
    shutil.copytree(finished_study, study)
    damage(study / file)
    before = state_under(study)
    with pytest.raises(SystemExit) as exit_info:
        main(stage_argv(study, READERS[reader]))
    assert exit_info.value.code == 2
    line = assert_one_line_error(capsys.readouterr().err, Path(file).name, *says)
    assert state_under(study) == before, "a refused command wrote something"
    assert all(mlflow_runs(tmp_path, stage) == [] for stage in STAGES), "a refused command opened an MLflow run"


def test_an_unchanged_strategy_is_kept_and_a_damaged_or_changed_one_runs_again(finished_study, tmp_path, capsys):
    """The ensemble stage reruns a strategy only where its identity or its outputs changed: the fix the message
    for a damaged strategy output names (`dvc repro -f -s ensemble`) rewrites it; a retrained member reruns it."""
    from seg_p2p.cli import main

    study = tmp_path / "study"
    shutil.copytree(finished_study, study)
    prediction = study / "runs" / "seed0" / "ensembles" / "max" / "predict" / "test_pred.npy"
    written = prediction.read_bytes()
    main(stage_argv(study, STAGES["ensemble"]))
    assert "max unchanged since it ran, kept" in capsys.readouterr().err
    truncate(prediction)
    main(stage_argv(study, STAGES["ensemble"]))
    assert "max done" in capsys.readouterr().err and prediction.read_bytes() == written
    probabilities = study / MEMBER / "predict" / "test_probs.npy"
    probabilities.write_bytes(probabilities.read_bytes())  # same bytes, rewritten: kept
    main(stage_argv(study, STAGES["ensemble"]))
    assert "max unchanged since it ran, kept" in capsys.readouterr().err
    changed = bytearray(probabilities.read_bytes())
    changed[-1] ^= 1  # the member's last stored probability, one bit
    probabilities.write_bytes(bytes(changed))
    main(stage_argv(study, STAGES["ensemble"]))
    assert "max done" in capsys.readouterr().err
    main(stage_argv(study, [*STAGES["ensemble"], "--seed", "1"]))  # another seed: another identity
    assert "max done" in capsys.readouterr().err
