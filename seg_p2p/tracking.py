"""MLflow tracking that never costs a result: one parent run per DVC experiment, a nested run per stage.

Stages are separate processes, so each finds (or creates) the parent run by its tags and joins it
through `mlflow.parentRunId`. Any failure of the tracking store is reported once and tracking is
switched off for the rest of the run: training goes on and the local files DVC reads are still written.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

from seg_p2p.config import Config

DEFAULT_URI = "sqlite:///mlflow.db"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def experiment_key(cfg: Config) -> str:
    """The DVC experiment's name under `dvc exp run`, else the experiment name at this commit."""
    return os.environ.get("DVC_EXP_NAME") or f"{cfg.name}@{git_commit()[:8]}"


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
    """Context manager around one nested MLflow run; a no-op after the first store failure."""

    def __init__(self, cfg: Config, run_name: str, tags: dict[str, str], params: dict | None = None):
        self.cfg, self.run_name, self.tags, self.params = cfg, run_name, tags, params or {}
        self.mlflow = None
        self.run_id = None

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
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any store failure must not stop training
            self._fail(exc)
            return None

    def _parent_run_id(self, client, experiment_id: str) -> str:
        key = experiment_key(self.cfg)
        found = client.search_runs([experiment_id], filter_string=f"tags.`seg_p2p.parent` = '{key}'",
                                   max_results=1)
        if found:
            return found[0].info.run_id
        run = client.create_run(experiment_id, run_name=key,
                                tags={"seg_p2p.parent": key, "experiment": self.cfg.name,
                                      "dataset": self.cfg.data.dataset, "git_commit": git_commit()})
        client.log_param(run.info.run_id, "seeds", str(self.cfg.seeds))
        return run.info.run_id

    def __enter__(self):
        if os.environ.get("RANK", "0") != "0":
            return self  # under torchrun only rank 0 tracks
        try:
            import mlflow
            from mlflow.tracking import MlflowClient

            self.mlflow = mlflow
            if not os.environ.get("MLFLOW_TRACKING_URI"):
                mlflow.set_tracking_uri(DEFAULT_URI)
            experiment = mlflow.set_experiment(self.cfg.mlflow.experiment)
            self.parent_id = self._parent_run_id(MlflowClient(), experiment.experiment_id)
            tags = {"mlflow.parentRunId": self.parent_id, "experiment": self.cfg.name,
                    "dataset": self.cfg.data.dataset, "git_commit": git_commit(), **self.tags}
            self.run_id = mlflow.start_run(run_name=self.run_name, tags=tags).info.run_id
            mlflow.log_params(self.params)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)
        return self

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
