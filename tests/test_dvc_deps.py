"""dvc.yaml's code dependencies match what each stage really imports.

For every stage, the import closure of its script inside this project (``stages/*.py`` helpers and
``src/medrestore`` modules, function-level imports included, with the ``__init__.py`` of every package
on the way) is derived from the source with ``ast``. The test fails when a file of that closure is not
covered by a dependency of the stage (a file, or a folder holding it), and when a code dependency
covers nothing the stage imports. A folder dependency may hold modules the stage does not import
(``src/medrestore/models`` for every model): the rule is that it covers at least one that it does.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"


def module_file(name: str) -> Path | None:
    base = SRC / Path(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def imports_of(path: Path) -> set[Path]:
    """Project files ``path`` imports directly (medrestore modules and sibling stage helpers)."""
    found: set[Path] = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] == "medrestore":
                parts = name.split(".")
                for i in range(1, len(parts) + 1):  # the package __init__ files run on the way
                    f = module_file(".".join(parts[:i]))
                    if f is not None:
                        found.add(f)
            elif path.parent == REPO / "stages" and (REPO / "stages" / f"{name}.py").is_file():
                found.add(REPO / "stages" / f"{name}.py")
    return found


def closure(script: Path) -> set[Path]:
    seen, todo = {script}, [script]
    while todo:
        for f in imports_of(todo.pop()):
            if f not in seen:
                seen.add(f)
                todo.append(f)
    return seen


def stages() -> dict[str, dict]:
    raw = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: (spec.get("do") or spec) for name, spec in raw.items()}


def code_deps(spec: dict) -> list[str]:
    deps = [d if isinstance(d, str) else next(iter(d)) for d in spec.get("deps", [])]
    return [d for d in deps if "${" not in d and d.startswith(("src/", "stages/"))]


def covers(dep: str, f: Path) -> bool:
    rel = f.relative_to(REPO).as_posix()
    return rel == dep or rel.startswith(dep.rstrip("/") + "/")


@pytest.mark.parametrize("stage", sorted(stages()))
def test_stage_lists_exactly_the_code_it_imports(stage):
    spec = stages()[stage]
    script = re.search(r"python (stages/\S+\.py)", spec["cmd"])
    assert script, f"{stage}: cmd does not run a stage script: {spec['cmd']}"
    files = closure(REPO / script.group(1))
    deps = code_deps(spec)
    missing = sorted(f.relative_to(REPO).as_posix() for f in files if not any(covers(d, f) for d in deps))
    assert not missing, f"dvc.yaml stage {stage}: imports {missing} but does not list them in deps. Fix: add them."
    extra = [d for d in deps if not any(covers(d, f) for f in files)]
    assert not extra, f"dvc.yaml stage {stage}: lists {extra} but imports nothing from there. Fix: remove them."


def test_the_closure_follows_function_level_imports_and_stage_helpers():
    files = {f.relative_to(REPO).as_posix() for f in closure(REPO / "stages" / "report.py")}
    assert "stages/_common.py" in files  # a sibling helper
    assert "src/medrestore/training/convergence.py" in files  # imported inside a function of report.py
    assert "src/medrestore/__init__.py" in files
