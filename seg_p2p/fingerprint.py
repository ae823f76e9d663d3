"""Identity of a training run: its settings, the seg_p2p code it runs and the bytes of its input files.

A checkpoint is resumed only into the same identity. DVC keeps (`persist`) a stage's outputs so a killed
run resumes; when it reruns a stage because code, data or a member changed, the finished checkpoint left
there must not be taken for that run's result, so the run starts over. Only the code the run can execute
counts (its import closure, seg_p2p.codedeps): editing the report never restarts a killed training.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from seg_p2p import codedeps


def fingerprint(*settings, code: str, inputs: list[Path] = ()) -> str:
    """`code`: the module the run starts from (e.g. "seg_p2p.train"); its closure is hashed."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    package_root = codedeps.PACKAGE_ROOT
    for path in codedeps.module_closure(code, package_root):
        digest.update(path.relative_to(package_root).as_posix().encode() + path.read_bytes())
    for path in inputs:
        with open(path, "rb") as file:
            digest.update(hashlib.file_digest(file, "sha256").digest())
    return digest.hexdigest()[:16]
