"""What a plain `pip install .` gets: every third-party module the library imports is a declared
dependency, and the package data (dataset checksums) is inside the wheel."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _declared() -> set[str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower().replace("_", "-") for d in deps}


def _imported_top_level() -> set[str]:
    names: set[str] = set()
    for path in (REPO / "src" / "medrestore").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"medrestore", "__future__"}


def test_every_imported_distribution_is_declared():
    dists = packages_distributions()
    declared = _declared()
    undeclared = {}
    for name in sorted(_imported_top_level()):
        providers = {d.lower().replace("_", "-") for d in dists.get(name, [])}
        assert providers, f"{name}: imported by src/medrestore but not installed"
        if not providers & declared:
            undeclared[name] = sorted(providers)
    assert not undeclared, f"imported but not declared in pyproject.toml's dependencies: {undeclared}"


def test_nothing_is_declared_that_the_library_never_imports():
    dists = packages_distributions()
    provided = {d.lower().replace("_", "-") for name in _imported_top_level() for d in dists.get(name, [])}
    unused = _declared() - provided - {"dvc", "torchvision", "bm3d"}  # run as a tool / loaded by name, not imported
    assert not unused, f"declared but never imported by src/medrestore: {sorted(unused)}"


def test_the_wheel_holds_the_dataset_checksums(tmp_path):
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(REPO), "-w", str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    wheel = next(tmp_path.glob("medrestore-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names if "/checksums/" in n}
    assert shipped == {p.name for p in (REPO / "src" / "medrestore" / "data" / "checksums").glob("*.sha256")}
