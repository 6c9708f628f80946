"""Code dependencies computed, not typed: the package modules a stage's implementation imports.

A stage depends on the source files of every `diffrepro` module reachable from its own module
and from the harness every stage runs through (config.py: params; runtime.py: threads, device,
seeds), following every `import` and `from ... import` in a file, at module level or inside a
function (lazy imports count: they run when the stage runs), and every string constant that is a
diffrepro module's dotted name (registries that import by name, as nets.NETS). A package's `__init__.py` counts
when any module inside it is imported. Both engines take these files as dependencies, so a code
edit re-runs the same jobs in Snakemake and DVC.

Not followed: the wiring that only names or launches stages (cli.py, engines.py, this module):
they decide the DAG and the command line, which each engine tracks itself. The declaration
(pipeline.py) counts for a stage whose own code imports it, as the report does (which metrics files
it collects, and where they lie, decide what it reads), but not through the params check (config.py
asks it only for the stage names), so editing it never re-runs every stage.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = "diffrepro"
SOURCE_ROOT = "src"                    # the package lives in src/diffrepro (paths are relative to the project)
HARNESS = ("diffrepro.config", "diffrepro.runtime")
WIRING = frozenset({"diffrepro.cli", "diffrepro.wiring.engines", "diffrepro.wiring.codedeps", "diffrepro.__main__"})
DECLARATION = "diffrepro.wiring.pipeline"     # followed from a stage's code, not from the harness


def package_dir() -> Path:
    return Path(__file__).resolve().parent.parent  # src/diffrepro (this file: src/diffrepro/wiring/)


def module_file(module: str) -> Path | None:
    """The source file of a diffrepro module or package, or None when there is none."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = package_dir().joinpath(*parts[1:])
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _is_package(module: str) -> bool:
    f = module_file(module)
    return f is not None and f.name == "__init__.py"


def _resolve_from(module: str, level: int, target: str | None) -> str:
    """The absolute module of `from <level dots><target> import ...` written in `module`."""
    if level == 0:
        return target or ""
    base = module.split(".")
    if not _is_package(module):
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


@functools.lru_cache(maxsize=None)
def direct_imports(module: str, top_level_only: bool = False) -> frozenset:
    """diffrepro modules `module` imports anywhere in its source (module level, lazily inside a
    function, or by name in a registry); only its module-level import statements when
    `top_level_only` (a package entered only on the way to one of its submodules)."""
    path = module_file(module)
    if path is None:
        return frozenset()
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(module, node.level, node.module)
            found.add(base)
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                if module_file(f"{base}.{alias.name}") is not None:
                    found.add(f"{base}.{alias.name}")
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(PACKAGE + ".")
              and module != DECLARATION):  # the declaration names each stage's module: the engines launch them
            found.add(node.value)  # a registry entry naming a module, imported with importlib
    if module in HARNESS:
        found.discard(DECLARATION)
    return frozenset(m for m in found if m.split(".")[0] == PACKAGE and module_file(m) is not None)


def closure(roots) -> list:
    """Every diffrepro module reachable from `roots` (sorted), their parent packages included.

    A module that is imported is followed wholly; a parent package that is only passed through
    (`from ..nets.classifier import X` runs nets/__init__.py) only through its module-level imports.
    """
    full, passed = set(), set()
    todo = [(m, True) for m in roots]
    while todo:
        module, wholly = todo.pop()
        if module in WIRING or module_file(module) is None:
            continue
        parts = module.split(".")
        for parent in (".".join(parts[:i]) for i in range(1, len(parts))):
            todo.append((parent, False))
        if module in full or (not wholly and module in passed):
            continue
        (full if wholly else passed).add(module)
        todo.extend((m, True) for m in direct_imports(module, top_level_only=not wholly))
    return sorted(full | passed)


def source_path(module: str) -> str:
    """The project-relative source path of a module (src/diffrepro/...), with / separators."""
    rel = module_file(module).relative_to(package_dir().parent)
    return "/".join((SOURCE_ROOT, *rel.parts))


@functools.lru_cache(maxsize=None)
def _stage_code(module: str) -> tuple:
    return tuple(sorted(source_path(m) for m in closure((module, *HARNESS))))


def stage_code(module: str) -> list:
    """Project-relative source files a stage implemented by `module` depends on (sorted)."""
    return list(_stage_code(module))  # once per stage module: Snakemake asks for every job


def code_digest(module: str) -> str:
    """SHA-256 of the source files a stage implemented by `module` depends on (their paths and
    bytes): what a resumable state records, so that a state left by other code is not continued."""
    import hashlib

    digest = hashlib.sha256()
    root = package_dir().parent.parent  # the project: stage_code's paths are relative to it
    for rel in stage_code(module):
        digest.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return digest.hexdigest()[:16]
