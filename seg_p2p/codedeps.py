"""The seg_p2p source files each DVC stage can run, found statically so dvc.yaml's code deps cannot go stale.

A stage must rerun when code it runs changes, and only then. Listing that code by hand in dvc.yaml drifts
as modules move; here it is derived from the imports instead (tests/test_dvc_deps.py checks dvc.yaml against
it). Every `import seg_p2p...` / `from seg_p2p... import ...` in a file counts, function-local lazy imports
included, plus the parent packages' `__init__.py` and the data files (yaml specs, templates) kept in the
folders of the packages reached.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent

# The modules each dvc.yaml stage runs through `seg-p2p`, the settings it loads included (prepare reads `data:` alone,
# so no model code); every stage also runs the CLI itself (see stage_code).
CONFIG_MODULE = "seg_p2p.config"
STAGE_MODULES: dict[str, tuple[str, ...]] = {
    "prepare": ("seg_p2p.data.prepare", "seg_p2p.data.settings"),
    "train": ("seg_p2p.train", CONFIG_MODULE),
    "predict": ("seg_p2p.predict", CONFIG_MODULE),
    "reference": ("seg_p2p.train", "seg_p2p.predict", CONFIG_MODULE),
    "ensemble": ("seg_p2p.ensemble.run", CONFIG_MODULE),
    "evaluate": ("seg_p2p.evaluate", CONFIG_MODULE),
    "report": ("seg_p2p.report", "seg_p2p.tracking", CONFIG_MODULE),
}
CLI_MODULE = "seg_p2p.cli"


def module_closure(root: str, package_root: Path | None = None) -> list[Path]:
    """The package's files (sources and data files) that importing and running module `root` can use."""
    return _closure([root], package_root or PACKAGE_ROOT)


def stage_code(stage: str, package_root: Path | None = None) -> list[Path]:
    """The code a dvc.yaml stage runs: its modules' closures, plus the CLI.

    cli.py imports each command's handler lazily, inside functions, so it counts as one file plus what it imports
    at module level; following all of its imports would make every stage depend on every command.
    """
    package_root = package_root or PACKAGE_ROOT
    cli_file = _module_file(CLI_MODULE, package_root)
    cli_imports = _imported_modules(cli_file, CLI_MODULE, package_root, module_level_only=True)
    roots = [*STAGE_MODULES[stage], *cli_imports]
    return sorted(set(_closure(roots, package_root)) | {cli_file} | set(_ancestor_inits(CLI_MODULE, package_root)))


def import_graph(package_root: Path | None = None) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (lazy imports included), for every module of the package."""
    package_root = package_root or PACKAGE_ROOT
    graph = {}
    for path in sorted(package_root.rglob("*.py")):
        parts = path.relative_to(package_root.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        imported = _imported_modules(path, module, package_root, module_level_only=False)
        graph[module] = {name for name in imported if _module_file(name, package_root) and name != module}
    return graph


def _closure(roots: list[str], package_root: Path) -> list[Path]:
    sources: set[Path] = set()
    pending = list(roots)
    while pending:
        module = pending.pop()
        path = _module_file(module, package_root)
        if path is None or path in sources:
            continue
        sources.add(path)
        pending.extend(_imported_modules(path, module, package_root, module_level_only=False))
        pending.extend(_parent_packages(module))
    data_files = {f for path in sources if path.name == "__init__.py" for f in _data_files(path.parent)}
    return sorted(sources | data_files)


def _imported_modules(path: Path, module: str, package_root: Path, module_level_only: bool) -> list[str]:
    """The package's modules that `path` (module `module`) imports; `from x import name` yields x and x.name."""
    package_name = package_root.name
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    nodes = _module_level_nodes(tree) if module_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute_name(node, module, is_package=path.name == "__init__.py")
            found += [base] + [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
    return [name for name in found if name == package_name or name.startswith(package_name + ".")]


def _module_level_nodes(tree: ast.AST):
    """The nodes that run on import: everything except function bodies."""
    pending = [tree]
    while pending:
        node = pending.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            pending.extend(ast.iter_child_nodes(node))


def _absolute_name(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    parts = module.split(".")
    anchor = parts if is_package else parts[:-1]
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join(anchor + ([node.module] if node.module else []))


def _parent_packages(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _ancestor_inits(module: str, package_root: Path) -> list[Path]:
    return [path for parent in _parent_packages(module) if (path := _module_file(parent, package_root))]


def _module_file(module: str, package_root: Path) -> Path | None:
    parts = module.split(".")
    if parts[0] != package_root.name:
        return None
    base = package_root.joinpath(*parts[1:])
    for candidate in (base / "__init__.py", base.with_name(base.name + ".py") if len(parts) > 1 else None):
        if candidate is not None and candidate.is_file():
            return candidate.resolve()
    return None


def _data_files(folder: Path) -> list[Path]:
    """Non-.py files in a package's folder and its subfolders that are not packages themselves."""
    files = []
    for entry in folder.iterdir():
        if entry.is_file() and entry.suffix not in (".py", ".pyc", ".pyo"):
            files.append(entry.resolve())
        elif entry.is_dir() and entry.name != "__pycache__" and not (entry / "__init__.py").exists():
            files += _data_files(entry)
    return files
