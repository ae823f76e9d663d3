"""MLflow tracking that never costs a result: one parent run per DVC experiment, a nested run per stage.

Stages are separate processes, so each finds (or creates) the parent run by its tags and joins it through
`mlflow.parentRunId`; on a cluster the client creates it once, before any job starts, and passes its id to the
jobs (PARENT_RUN_ENV), so stages starting at the same moment never make two. A training keeps one run across kills
and resumes: its checkpoint holds the run id and a resumed training reopens that run (`Tracker.open`); a run left
RUNNING by a process that is gone is closed as KILLED when the same training starts again. Any failure of the tracking store is
reported once and tracking is switched off for the rest of the run: training goes on and the local files
DVC reads are still written.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from seg_p2p.processes import process_gone
from seg_p2p.config import Config
from seg_p2p.interrupts import deferred

DEFAULT_URI = "sqlite:///mlflow.db"
PARENT_RUN_ENV = "SEG_P2P_MLFLOW_PARENT_RUN_ID"  # the parent run a cluster job joins (seg_p2p.cluster)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def experiment_key(cfg: Config) -> str:
    """The DVC experiment's name under `dvc exp run`, else the experiment name at this commit."""
    return os.environ.get("DVC_EXP_NAME") or f"{cfg.name}@{git_commit()[:8]}"


def placement() -> dict[str, str]:
    """Where the scheduler put this process: its host, the GPUs it may use and its SLURM job, where set."""
    found = {"host": socket.gethostname()}
    for key, variable in (("cuda_visible_devices", "CUDA_VISIBLE_DEVICES"), ("slurm_job_id", "SLURM_JOB_ID")):
        if variable in os.environ:
            found[key] = os.environ[variable]
    return found


def find_or_create_parent(client, experiment_id: str, cfg: Config, key: str) -> str:
    """The id of the experiment's parent run (tag seg_p2p.parent = key), created if there is none."""
    found = client.search_runs([experiment_id], filter_string=f"tags.`seg_p2p.parent` = '{key}'", max_results=1)
    if found:
        return found[0].info.run_id
    run = client.create_run(experiment_id, run_name=key,
                            tags={"seg_p2p.parent": key, "experiment": cfg.name, "dataset": cfg.data.dataset,
                                  "git_commit": git_commit()})
    client.log_param(run.info.run_id, "seeds", str(cfg.seeds))
    return run.info.run_id


def create_parent_run(cfg: Config, key: str) -> str | None:
    """The parent run of experiment `key`, found or created once by a client before its jobs start (None, with a
    warning, when the store cannot be reached: the jobs then find or create it themselves, or train untracked)."""
    try:
        import mlflow
        from mlflow.tracking import MlflowClient

        if not os.environ.get("MLFLOW_TRACKING_URI"):
            mlflow.set_tracking_uri(DEFAULT_URI)
        experiment = mlflow.set_experiment(cfg.mlflow.experiment)
        return find_or_create_parent(MlflowClient(), experiment.experiment_id, cfg, key)
    except Exception as exc:  # noqa: BLE001 - tracking never stops the work
        detail = " ".join(str(exc).split())[:200]
        print(f"seg-p2p: warning: MLflow tracking failed ({type(exc).__name__}: {detail}); the jobs run untracked "
              "unless their store works", file=sys.stderr)
        return None


def remote_store(uri: str) -> bool:
    """Whether a tracking URI is a server other machines reach (http, https, databricks), not a local file."""
    return uri.split(":", 1)[0] in ("http", "https", "databricks")


def flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:6000]
    return flat


class Tracker:
    """Context manager around one nested MLflow run; a no-op after the first store failure.

    `defer=True`: the run starts only at `open(resume_run_id)`, which a training calls once it knows from its
    checkpoint which run it continues."""

    def __init__(self, cfg: Config, run_name: str, tags: dict[str, str], params: dict | None = None,
                 defer: bool = False):
        self.cfg, self.run_name, self.tags, self.params, self.defer = cfg, run_name, tags, params or {}, defer
        self.mlflow = None
        self.run_id = None
        self.opened = False

    def _fail(self, exc: Exception) -> None:
        if self.mlflow is not None:
            detail = " ".join(str(exc).split())[:200]  # one line, whatever the store's message
            print(f"seg-p2p: warning: MLflow tracking failed ({type(exc).__name__}: {detail}); "
                  "training goes on, metrics are still written to local files", file=sys.stderr)
            if self.run_id is not None:  # pop our run off mlflow's active-run stack, or the next start_run fails
                try:
                    self.mlflow.end_run(status="FAILED")
                except Exception:  # noqa: BLE001 - the store is already failing
                    pass
        self.mlflow = None

    def _call(self, fn, *args, **kwargs):
        if self.mlflow is None:
            return None
        with deferred():  # a signal is raised after the call: cut mid-transaction, it would lock the store
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - any store failure must not stop training
                self._fail(exc)
                return None

    def __enter__(self):
        if not self.defer:
            self.open()
        return self

    def open(self, resume_run_id: str | None = None) -> None:
        """Start this stage's run under the experiment's parent, or reopen `resume_run_id` (a resumed training's).
        Only the first call does anything."""
        if self.opened or os.environ.get("RANK", "0") != "0":
            return  # under torchrun only rank 0 tracks
        self.opened = True
        try:
            import mlflow
            from mlflow.tracking import MlflowClient

            self.mlflow = mlflow
            if not os.environ.get("MLFLOW_TRACKING_URI"):
                mlflow.set_tracking_uri(DEFAULT_URI)
            client = MlflowClient()
            experiment = mlflow.set_experiment(self.cfg.mlflow.experiment)
            self.parent_id = os.environ.get(PARENT_RUN_ENV) or find_or_create_parent(
                client, experiment.experiment_id, self.cfg, experiment_key(self.cfg))
            self._close_stale_runs(client, experiment.experiment_id, keep=resume_run_id)
            process = {"seg_p2p.pid": str(os.getpid())} | {f"seg_p2p.{k}": v for k, v in placement().items()}
            if resume_run_id and self._belongs_here(client, resume_run_id):
                self.run_id = mlflow.start_run(run_id=resume_run_id).info.run_id
                mlflow.set_tags(process)
            else:
                tags = {"mlflow.parentRunId": self.parent_id, "experiment": self.cfg.name,
                        "dataset": self.cfg.data.dataset, "git_commit": git_commit(), **self.tags, **process}
                self.run_id = mlflow.start_run(run_name=self.run_name, tags=tags).info.run_id
                mlflow.log_params(self.params)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    def _belongs_here(self, client, run_id: str) -> bool:
        """A run id from a checkpoint is reopened only if this store holds it under this experiment's parent."""
        try:
            run = client.get_run(run_id)
        except Exception:  # noqa: BLE001 - another store, or a deleted run: start a new one
            return False
        return run.data.tags.get("mlflow.parentRunId") == self.parent_id and run.info.run_name == self.run_name

    def _close_stale_runs(self, client, experiment_id: str, keep: str | None) -> None:
        """Mark KILLED the runs of this stage left RUNNING by a process of this host that is gone (SIGKILL,
        power loss): nothing else would ever end them. A live process's run, or another host's, is left alone."""
        running = client.search_runs([experiment_id], filter_string=(
            f"tags.`mlflow.parentRunId` = '{self.parent_id}' and attributes.run_name = '{self.run_name}' "
            "and attributes.status = 'RUNNING'"))
        for run in running:
            tags = run.data.tags
            if run.info.run_id != keep and tags.get("seg_p2p.host") == socket.gethostname() and \
                    tags.get("seg_p2p.pid", "").isdigit() and process_gone(int(tags["seg_p2p.pid"])):
                client.set_terminated(run.info.run_id, "KILLED")

    def log_history(self, history: list[dict]) -> None:
        """Log the epochs of a resumed training's history that its run lacks (a kill can fall between the
        checkpoint and the MLflow call): every epoch ends up in the run exactly once."""
        if self.mlflow is None or not history:
            return
        from mlflow.tracking import MlflowClient

        logged = self._call(MlflowClient().get_metric_history, self.run_id, "lr") or []
        done = max((metric.step for metric in logged), default=0)
        for row in history:
            if row["epoch"] > done:
                self.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            status = "FINISHED"
        elif issubclass(exc_type, KeyboardInterrupt):
            status = "KILLED"
        else:
            status = "FAILED"
        self._call(self.mlflow.end_run, status=status) if self.mlflow else None
        return False

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.mlflow is not None:
            self._call(self.mlflow.log_metrics, metrics, step=step)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        if self.mlflow is not None:
            self._call(self.mlflow.log_artifact, str(path), folder)

    def log_checkpoint(self, path: Path) -> None:
        """The run's weights: uploaded where the store is a tracking server (other machines read its artifacts),
        else named by a tag, since on a local store an artifact is a second copy of a file this machine keeps in
        the run folder (and DVC's cache links it, never copies)."""
        if self.mlflow is None:
            return
        if remote_store(self.mlflow.get_tracking_uri()):
            self.log_artifact(path, "model")
        else:
            self._call(self.mlflow.set_tag, "checkpoint", str(Path(path).resolve()))

    def finish_parent(self, metrics: dict[str, float]) -> None:
        """The study's headline numbers on the parent run, which is marked finished (until a rerun's report)."""
        if self.mlflow is not None:
            from mlflow.tracking import MlflowClient

            client = MlflowClient()
            for key, value in metrics.items():
                self._call(client.log_metric, self.parent_id, key, value)
            self._call(client.set_terminated, self.parent_id, "FINISHED")

    def log_to_parent(self, path: Path, folder: str | None = None) -> None:
        """Attach a file (the conclusion tables, figures) to the parent run of the experiment."""
        if self.mlflow is not None:
            from mlflow.tracking import MlflowClient

            self._call(MlflowClient().log_artifact, self.parent_id, str(path), folder)
