"""The linter (ruff, configured in pyproject.toml, run by `make lint` and CI): the checkout has no finding,
and the configuration catches what it is meant to (long lines, unsorted imports, unused names)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(importlib.util.find_spec("ruff") is None,
                                reason="ruff is not installed (make install puts the pinned one in .venv)")


def _ruff(*args: str, cwd: Path = REPO, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=cwd, input=stdin, capture_output=True, text=True,
                          timeout=300)


def test_the_checkout_has_no_lint_finding():
    res = _ruff("check", "--no-cache", "--output-format", "concise", ".")
    assert res.returncode == 0, (
        f"ruff found (fix them; `ruff check --fix` fixes the [*] ones):\n{res.stdout}{res.stderr}"
    )


def test_the_configuration_catches_long_lines_unsorted_imports_and_unused_names():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["ruff"]
    assert config["line-length"] == 120 and {"E", "F", "W", "I", "B", "UP"} <= set(config["lint"]["select"])
    bad = ("import sys\nimport os\n\n\n"
           "def f(x):\n"
           "    unused = 1\n"
           f"    return os.path.join(str(x), {'x' * 120!r})\n")
    res = _ruff("check", "--no-cache", "--output-format", "concise", "--stdin-filename", "src/medrestore/bad.py", "-",
                stdin=bad)
    codes = {line.split(" ")[1] for line in res.stdout.splitlines() if line.startswith("src/medrestore/bad.py:")}
    assert res.returncode == 1 and {"E501", "I001", "F401", "F841"} <= codes, res.stdout
    good = "import os\nimport sys\n\n\ndef f(x):\n    return os.path.join(str(x), sys.prefix)\n"
    res = _ruff("check", "--no-cache", "--stdin-filename", "src/medrestore/good.py", "-", stdin=good)
    assert res.returncode == 0, res.stdout


def test_every_source_file_is_linted():
    """An exclude pattern such as "data" would silently skip src/medrestore/data."""
    res = _ruff("check", "--no-cache", "--show-files", ".")
    listed = {Path(line.strip()).resolve() for line in res.stdout.splitlines() if line.strip().endswith(".py")}
    sources = {p.resolve() for p in [*(REPO / "src").rglob("*.py"), *(REPO / "stages").glob("*.py")]}
    assert sources and not sources - listed, sorted(str(p.relative_to(REPO)) for p in sources - listed)


def test_no_function_in_the_package_is_longer_than_80_lines():
    import ast

    long = []
    for path in sorted((REPO / "src" / "medrestore").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 80:
                long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} "
                            f"({node.end_lineno - node.lineno + 1} lines)")
    assert not long, "split these into helpers of one concern each:\n" + "\n".join(long)
