"""The code each DVC stage depends on: the import closure of its script, derived from the source.

For a stage script (``stages/*.py``), :func:`closure` follows every import of a ``medrestore`` module
(function-level imports included, with the ``__init__.py`` of every package on the way) with
``ast``, without importing anything; a package that imports every module of its folder by discovery
(``pkgutil.iter_modules(__path__)``: the model registry) imports all of them. dvc.yaml must list every file of it (a
file, or a folder that
holds it) and nothing that covers none of it: ``tests/test_dvc_deps.py`` checks this, and

    python -m medrestore.pipeline.deps --write

brings dvc.yaml in line (adds what is missing, drops what covers nothing; a folder that still covers
an imported file stays, so ``src/medrestore/models`` keeps standing for every model).
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import yaml

from medrestore.core.io import write_text_atomic

REPO = Path(__file__).resolve().parents[3]
SRC = REPO / "src"


def module_file(name: str, src: Path = SRC) -> Path | None:
    base = src / Path(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def imports_of(path: Path, repo: Path = REPO) -> set[Path]:
    """Project files ``path`` imports directly (medrestore modules and sibling stage helpers)."""
    src = repo / "src"
    found: set[Path] = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if path.name == "__init__.py" and _discovers_its_modules(node):  # a registry package (medrestore.models)
            found.update(f for f in path.parent.glob("*.py") if f != path)
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] == "medrestore":
                parts = name.split(".")
                for i in range(1, len(parts) + 1):  # the package __init__ files run on the way
                    f = module_file(".".join(parts[:i]), src)
                    if f is not None:
                        found.add(f)
            elif path.parent == repo / "stages" and (repo / "stages" / f"{name}.py").is_file():
                found.add(repo / "stages" / f"{name}.py")
    return found


def _discovers_its_modules(node: ast.AST) -> bool:
    """``pkgutil.iter_modules(__path__)`` (or ``iter_modules(__path__)``): a package that imports every
    module of its folder, so that each registers itself; all of them are its imports."""
    if not isinstance(node, ast.Call) or not node.args:
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return name == "iter_modules" and isinstance(node.args[0], ast.Name) and node.args[0].id == "__path__"


def closure(script: Path, repo: Path = REPO) -> set[Path]:
    seen, todo = {script}, [script]
    while todo:
        for f in imports_of(todo.pop(), repo):
            if f not in seen:
                seen.add(f)
                todo.append(f)
    return seen


def stages(repo: Path = REPO) -> dict[str, dict]:
    raw = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    return {name: (spec.get("do") or spec) for name, spec in raw.items()}


def is_code(dep: str) -> bool:
    return "${" not in dep and dep.startswith(("src/", "stages/"))


def code_deps(spec: dict) -> list[str]:
    deps = [d if isinstance(d, str) else next(iter(d)) for d in spec.get("deps", [])]
    return [d for d in deps if is_code(d)]


def covers(dep: str, rel: str) -> bool:
    return rel == dep or rel.startswith(dep.rstrip("/") + "/")


def script_of(spec: dict) -> str:
    found = re.search(r"python (stages/\S+\.py)", spec["cmd"])
    if not found:
        raise ValueError(f"cmd does not run a stage script: {spec['cmd']}")
    return found.group(1)


def check(name: str, spec: dict, repo: Path = REPO) -> tuple[list[str], list[str]]:
    """(imported files no dependency covers, code dependencies that cover no imported file)."""
    files = sorted(f.relative_to(repo).as_posix() for f in closure(repo / script_of(spec), repo))
    deps = code_deps(spec)
    missing = [f for f in files if not any(covers(d, f) for d in deps)]
    extra = [d for d in deps if not any(covers(d, f) for f in files)]
    return missing, extra


def _folded(deps: set[str], repo: Path) -> set[str]:
    """``deps`` with the files of a package folder replaced by the folder where it lists all of them."""
    out = set(deps)
    for pkg in sorted((repo / "src").rglob("__init__.py"), key=lambda f: len(f.parts)):
        folder = pkg.parent.relative_to(repo).as_posix()
        if folder == "src/medrestore" or any(covers(d, folder) for d in out if d != folder):
            continue
        files = [f.relative_to(repo).as_posix() for f in pkg.parent.rglob("*.py")]
        if files and all(any(covers(d, f) for d in out) for f in files):
            out = {d for d in out if not covers(folder, d)} | {folder}
    return out


def wanted(spec: dict, repo: Path = REPO) -> list[str]:
    """The stage's code dependencies once in line: the script, then the kept and added ones (a package
    folder where every module of it is imported), sorted."""
    missing, extra = check("", spec, repo)
    script = script_of(spec)
    kept = [d for d in code_deps(spec) if d not in extra and d != script]
    return [script, *sorted(_folded(set(kept) | set(missing) - {script}, repo))]


def sync(repo: Path = REPO) -> list[str]:
    """Rewrite dvc.yaml's code dependencies in place (text edit: comments and order of the rest kept);
    returns the names of the stages that changed."""
    path = repo / "dvc.yaml"
    lines = path.read_text().splitlines(keepends=True)
    specs = stages(repo)
    changed: list[str] = []
    out: list[str] = []
    i, stage = 0, None
    while i < len(lines):
        line = lines[i]
        top = re.match(r"^  ([A-Za-z0-9_@.-]+):\s*$", line)
        if top:
            stage = top.group(1)
        dep_head = re.match(r"^(\s*)deps:\s*$", line)
        if dep_head and stage in specs:
            out.append(line)
            indent = dep_head.group(1) + "  "
            block: list[str] = []
            i += 1
            while i < len(lines) and lines[i].startswith(indent + "- "):
                block.append(lines[i])
                i += 1
            items = [b.strip()[2:] for b in block]
            code = [d for d in items if is_code(d)]
            new_code = wanted(specs[stage], repo)
            if code != new_code:
                changed.append(stage)
            rest = [d for d in items if not is_code(d)]
            out.extend(f"{indent}- {d}\n" for d in [*new_code, *rest])
            continue
        out.append(line)
        i += 1
    text = "".join(out)
    if text != path.read_text():
        write_text_atomic(path, text)
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Check (or --write) dvc.yaml's code dependencies against the stages' "
                                             "imports.")
    ap.add_argument("--write", action="store_true", help="bring dvc.yaml in line")
    args = ap.parse_args(argv)
    if args.write:
        changed = sync()
        print(f"dvc.yaml: {len(changed)} stage(s) updated" + (f": {', '.join(changed)}" if changed else ""))
    bad = 0
    for name, spec in stages().items():
        missing, extra = check(name, spec)
        if missing or extra:
            bad += 1
            print(f"{name}: missing {missing}, covers nothing {extra}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
