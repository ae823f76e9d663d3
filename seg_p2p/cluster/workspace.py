"""A workspace per experiment, so several experiments of a sweep run on the cluster at once.

Each is a git worktree of the repo (`<cluster.folder>/workspaces/NAME`) at its commit, with the working tree's
uncommitted changes, as `dvc exp run --queue` takes them, and the experiment's settings applied to params.yaml by
DVC's own override parser (what `dvc exp run -S` uses). It shares the repo's DVC cache and links its outputs from
it (nothing is copied per experiment); DVC then decides which stages the settings put out of date. Its recording
job saves it with `dvc exp save`: git worktrees share their refs, so `dvc exp show` in the repo lists it.
"""

from __future__ import annotations

import shutil
import subprocess
from contextlib import chdir
from pathlib import Path

from seg_p2p.errors import UserError
from seg_p2p.environment import CACHE_LINKS, dvc_executable


def git(root: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if result.returncode:
        raise UserError(f"git {' '.join(args[:2])} in {root} failed ({result.stderr.strip()[:200]}); an experiment "
                        "on the cluster needs the project in a git repository with at least one commit")
    return result.stdout


def experiment_workspace(repo: Path, folder: str, name: str, overrides: list[str]) -> Path:
    """Create (or bring up to date with the repo) the workspace of experiment `name`, ready for `cluster run`."""
    from dvc.utils.hydra import apply_overrides

    workspace = repo / folder / "workspaces" / name
    head = git(repo, "rev-parse", "HEAD").strip()
    had_lock = (workspace / "dvc.lock").exists()
    if not (workspace / ".git").exists():
        git(repo, "worktree", "prune")
        git(repo, "worktree", "add", "--detach", "--force", str(workspace), head)
    else:
        git(workspace, "checkout", "--quiet", "--force", "--detach", head)
    # The repo's uncommitted work, as `dvc exp run` takes it; a workspace keeps its own dvc.lock once it has one
    # (it records what this experiment ran).
    changed = git(repo, "diff", "--name-only", "HEAD").split() + \
        git(repo, "ls-files", "--others", "--exclude-standard").split()
    for path in sorted(set(changed)):
        if path == "dvc.lock" and had_lock:
            continue
        source, target = repo / path, workspace / path
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        elif not source.exists():
            target.unlink(missing_ok=True)
    apply_overrides(str(workspace / "params.yaml"), overrides)
    dvc = dvc_executable()
    subprocess.run([dvc, "cache", "dir", "--local", str((repo / ".dvc" / "cache").resolve())], cwd=workspace,
                   check=True)
    subprocess.run([dvc, "config", "--local", "cache.type", CACHE_LINKS], cwd=workspace, check=True)
    _copy_uncached_outputs(repo, workspace)
    subprocess.run([dvc, "checkout", "--allow-missing", "--quiet"], cwd=workspace, check=False)
    return workspace


def _copy_uncached_outputs(repo: Path, workspace: Path) -> None:
    """Outputs kept out of the cache (metrics, reports) exist only in the repo's working tree: copy those the
    workspace lacks, so a stage whose outputs match dvc.lock is seen up to date there too."""
    from dvc.repo import Repo

    with chdir(repo), Repo(str(repo)) as project:
        paths = [str(out.def_path) for stage in project.index.stages for out in stage.outs if not out.use_cache]
    for path in paths:
        source, target = repo / path, workspace / path
        if target.exists() or not source.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
