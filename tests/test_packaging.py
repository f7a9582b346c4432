"""What a plain `pip install .` gets: every third-party module the library imports is a declared
dependency, and the package data (dataset checksums) is inside the wheel."""

from __future__ import annotations

import ast
import os
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
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(REPO),
                          "-w", str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    wheel = next(tmp_path.glob("medrestore-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names if "/checksums/" in n}
    assert shipped == {p.name for p in (REPO / "src" / "medrestore" / "data" / "checksums").glob("*.sha256")}
    assert "medrestore/models_catalog.json" in names  # `medrestore models` without importing torch


def test_a_non_editable_install_restores_an_image(tmp_path, chase_dir):
    """`pip install .` (not editable: a copy of the package, its data files included) and then
    `medrestore restore` run from that copy give the pixels this checkout computes. The dependencies
    come from the test environment (their declarations are checked above); a fully clean venv takes
    minutes of installing and was measured by hand (README, install)."""
    import numpy as np
    import torch
    from PIL import Image

    from medrestore.core.io import read_image
    from medrestore.degradations import corrupt, to_float, to_uint8
    from medrestore.models import build_model, save_model
    from medrestore.serving.inference import restore_array

    target = tmp_path / "site"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                          str(target), str(REPO)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    torch.manual_seed(0)
    model = build_model("redae").eval()
    save_model(model, tmp_path / "model", name="redae", kwargs={})
    noisy, _ = corrupt(read_image(chase_dir / "Image_01L.jpg")[::4, ::4], {"kind": "gaussian", "sigma": 25}, [3])
    Image.fromarray(noisy).save(tmp_path / "noisy.png")
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c",
                            "import medrestore, importlib.resources as r; print(medrestore.__file__); "
                            "print(r.files('medrestore.data').joinpath('checksums', 'chase_db1.sha256').read_text())"],
                           capture_output=True, text=True, cwd=tmp_path, env=env)
    assert where.returncode == 0 and where.stdout.startswith(str(target)) and "Image_01L.jpg" in where.stdout
    run = subprocess.run([sys.executable, "-m", "medrestore.cli", "restore", "--model", str(tmp_path / "model"),
                          str(tmp_path / "noisy.png"),
                          "--out", str(tmp_path / "out"), "--no-progress"], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    expected = to_uint8(restore_array(model, to_float(noisy), tile=512, overlap=32))
    assert np.array_equal(read_image(tmp_path / "out" / "noisy.png"), expected)


def test_the_lock_is_the_closure_of_pyproject_with_one_opencv_and_one_lightning():
    """requirements.lock is what tools/lock.py derives from pyproject.toml (the dependencies and the
    test and team extras, transitively); it holds one OpenCV wheel (headless) and one Lightning."""
    import subprocess

    res = subprocess.run([sys.executable, str(REPO / "tools" / "lock.py"), "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    names = {
        line.split("==")[0]
        for line in (REPO / "requirements.lock").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert "opencv-python-headless" in names and "opencv-python" not in names
    assert "pytorch-lightning" in names and "lightning" not in names
    assert {"pytest", "hypothesis", "moto", "ruff"} <= names  # the test extra's tools are in the lock through the extra
