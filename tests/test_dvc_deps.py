"""dvc.yaml's code deps match the seg_p2p code each stage runs (seg_p2p.codedeps): none missing, none stale."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from conftest import run_in, study_repo

from seg_p2p.codedeps import STAGE_MODULES, import_graph, module_closure, stage_code

REPO_ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def covers(dep: str, path: str) -> bool:
    dep = dep.rstrip("/")
    return path == dep or path.startswith(dep + "/")


def test_every_stage_is_known():
    assert set(STAGES) - {"code"} == set(STAGE_MODULES), \
        "dvc.yaml stages and seg_p2p.codedeps.STAGE_MODULES must name the same stages"


@pytest.mark.parametrize("stage", sorted(STAGE_MODULES))
def test_a_stage_depends_on_the_listing_of_its_code_and_on_no_source_file(stage):
    """Code reaches a stage only through runs/code/<stage>.sha256, which the code stage writes from the package."""
    deps = [dep for dep in STAGES[stage].get("deps", []) if isinstance(dep, str)]
    assert f"runs/code/{stage}.sha256" in deps
    assert not [dep for dep in deps if covers("seg_p2p", dep)], "a source file dep: the code stage lists it"
    assert STAGES["code"]["deps"] == ["seg_p2p"] and STAGES["code"]["outs"] == ["runs/code"]


def test_the_code_listing_names_every_file_a_stage_runs_with_its_hash(tmp_path):
    from seg_p2p.stage_code import write_listings

    write_listings(tmp_path / "code")
    assert sorted(path.name for path in (tmp_path / "code").iterdir()) == sorted(f"{s}.sha256" for s in STAGE_MODULES)
    for stage in STAGE_MODULES:
        text = (tmp_path / "code" / f"{stage}.sha256").read_text()
        listed = dict(reversed(line.split("  ", 1)) for line in text.splitlines())
        assert sorted(listed) == [path.relative_to(REPO_ROOT).as_posix() for path in stage_code(stage)]
        assert listed["seg_p2p/cli.py"] == hashlib.sha256((REPO_ROOT / "seg_p2p" / "cli.py").read_bytes()).hexdigest()


def test_module_closure_on_a_fake_package(tmp_path):
    package = tmp_path / "fakepkg"
    files = {
        "__init__.py": "",
        "main.py": "import os\nimport numpy\nfrom fakepkg.sub import helper\n\ndef run():\n    import fakepkg.lazy\n",
        "lazy.py": "from . import rel\n",
        "rel.py": "",
        "unused.py": "",
        "sub/__init__.py": "",
        "sub/helper.py": "",
        "sub/templates/page.j2": "",
        "sub/other.py": "",
    }
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)

    found = {path.relative_to(package).as_posix() for path in module_closure("fakepkg.main", package_root=package)}

    assert found == {"__init__.py", "main.py", "lazy.py", "rel.py", "sub/__init__.py", "sub/helper.py",
                     "sub/templates/page.j2"}


def test_no_module_of_the_package_reaches_itself_through_its_imports():
    """The package's import graph (lazy imports included) has no circle: config and the models meet only in
    seg_p2p.settings, below both."""
    graph = import_graph()
    assert "seg_p2p.config" in graph and "seg_p2p.models.pix2pix" in graph

    def reaches(start: str) -> set[str]:
        seen, pending = set(), list(graph[start])
        while pending:
            module = pending.pop()
            if module not in seen:
                seen.add(module)
                pending += graph.get(module, ())
        return seen

    circles = [module for module in graph if module in reaches(module)]
    assert not circles, f"these modules import themselves through others: {circles}"


# The package from the bottom up: a module (or subpackage, taken whole) imports only from layers below its own.
LAYERS = [
    {"seg_p2p", "codedeps", "errors", "interrupts", "processes", "run_paths"},
    {"atomic", "device", "distributed", "environment", "fingerprint", "settings", "stored"},
    {"ragged", "seeding", "stage_code"},
    {"data", "probabilities"},
    {"metrics", "models"},
    {"config"},
    {"checkpoint", "inference", "report", "tracking"},
    {"epoch_outputs", "predict"},
    {"engine"},
    {"costs"},
    {"budget"},
    {"ensemble", "train"},
    {"evaluate", "plan", "segment"},
    {"cluster"},
    {"experiments"},
    {"cli"},
    {"__main__"},
]


def test_every_import_runs_down_the_layers():
    """No arrow back up (lazy imports included): e.g. data/transforms reads the data settings it is given, never
    config, which stands above data."""
    level = {name: i for i, layer in enumerate(LAYERS) for name in layer}

    def part(module: str) -> str:  # seg_p2p.data.readers -> data; seg_p2p -> seg_p2p
        return module.split(".")[1] if "." in module else module

    graph = import_graph()
    assert {part(module) for module in graph} <= set(level), "a new module: give it its layer in LAYERS"
    upward = sorted(f"{module} imports {target}" for module, targets in graph.items() for target in targets
                    if target.startswith("seg_p2p") and level[part(target)] >= level[part(module)]
                    and part(target) != part(module))
    assert not upward, f"imports that run up or sideways (move the shared code down, or reorder LAYERS): {upward}"


def test_no_function_over_60_lines_and_no_module_over_300():
    """Small enough to read whole: every function of the package and the benchmarks, every module."""
    import ast

    from conftest import REPO

    too_long = []
    for path in sorted([*(REPO / "seg_p2p").rglob("*.py"), *(REPO / "benchmarks").rglob("*.py")]):
        text = path.read_text()
        if (lines := len(text.splitlines())) > 300:
            too_long.append(f"{path.relative_to(REPO)}: {lines} lines")
        too_long += [f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines"
                     for node in ast.walk(ast.parse(text)) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                     and node.end_lineno - node.lineno + 1 > 60]
    assert not too_long, f"split these: {too_long}"


@pytest.mark.slow
def test_editing_a_model_file_leaves_prepare_up_to_date(tmp_path):
    """prepare reads `data:` alone: a model file is not among its deps, so editing one never re-decodes a dataset;
    the stages that run the model are out of date."""
    root = study_repo(tmp_path, {"seeds": [0]})
    run_in(["dvc", "repro", "prepare"], root)
    with open(root / "seg_p2p" / "models" / "pix2pix.py", "a") as handle:
        handle.write("\n# an edit\n")
    stale = json.loads(run_in(["dvc", "status", "--json"], root).stdout)
    assert "prepare" not in stale and "train@pix2pix-0" in stale, stale
