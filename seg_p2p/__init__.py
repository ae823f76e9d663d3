"""seg_p2p: pix2pix as a semantic segmenter, alone, in ensembles, and trained end-to-end with other networks."""

import os

# Offline by default, the one place it is set: MLflow telemetry, DVC analytics and albumentations' update check all
# reach the network. Every entry point (the CLI, the tests, the benchmark) imports seg_p2p before those libraries,
# and the processes it starts (dvc, stages, jobs) inherit the environment.
OFFLINE = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "DVC_NO_ANALYTICS": "1",
           "NO_ALBUMENTATIONS_UPDATE": "1"}
for _name, _value in OFFLINE.items():
    os.environ.setdefault(_name, _value)

__version__ = "0.1.0"
