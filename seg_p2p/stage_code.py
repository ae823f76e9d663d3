"""`python -m seg_p2p.stage_code --out runs/code`: dvc.yaml's `code` stage, the code each stage runs as one file.

For each stage kind, `<out>/<kind>.sha256` lists the SHA-256 of every file of the code it runs (seg_p2p.codedeps:
its import closure and the CLI), in `sha256sum`'s format. Every other stage depends on its kind's list instead of on
the files themselves, so editing code reruns exactly the stages that run it, as before, while dvc.lock records one
code entry per stage instead of about thirty. DVC parses the whole lock file again for every stage it runs; this
took the default study's from 5,075 lines to 2,274.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from seg_p2p.atomic import write_text
from seg_p2p.codedeps import PACKAGE_ROOT, STAGE_MODULES, stage_code


def code_listing(kind: str, package_root: Path = PACKAGE_ROOT) -> str:
    """`sha256sum`'s lines for the files stage kind `kind` runs, paths relative to the project."""
    lines = [f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.relative_to(package_root.parent).as_posix()}"
             for path in stage_code(kind, package_root)]
    return "\n".join(lines) + "\n"


def write_listings(out_dir: Path) -> None:
    for kind in STAGE_MODULES:
        write_text(out_dir / f"{kind}.sha256", code_listing(kind))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    write_listings(parser.parse_args().out)
