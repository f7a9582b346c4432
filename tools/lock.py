"""requirements.lock from pyproject.toml: every distribution that medrestore and its ``test`` and
``team`` extras need, transitively, at the version installed in this environment.

    .venv/bin/python tools/lock.py            # rewrite requirements.lock
    .venv/bin/python tools/lock.py --check    # exit 1 when requirements.lock differs (CI: tests/test_packaging.py)

The walk follows each distribution's own requirements (markers evaluated for this interpreter, extras
only where a requirement names them). Left out on purpose (:data:`LEFT_OUT`): ``opencv-python``,
which facexlib (through pyiqa) asks for although ``opencv-python-headless`` provides the same ``cv2``
module without the GUI libraries; two OpenCV wheels in one environment overwrite each other's files.
``make install`` installs the lock with ``--no-deps`` so that nothing outside it comes in.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
EXTRAS = ("test", "team")
#: Asked for by a dependency but provided otherwise, with the reason.
LEFT_OUT = {"opencv-python": "facexlib's cv2 comes from opencv-python-headless (one OpenCV)"}
HEADER = (
    "# Every transitive version of medrestore[test,team] (pyproject.toml), from tools/lock.py in a working .venv\n"
    "# (Python 3.11, x86_64). `make install` installs exactly this list (--no-deps). Left out on purpose: "
    + "; ".join(f"{k} ({v})" for k, v in LEFT_OUT.items())
    + ".\n"
)


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def roots() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in EXTRAS:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return reqs


def closure() -> dict[str, str]:
    """Canonical name -> installed version of every distribution the roots need."""
    env = default_environment()
    found: dict[str, str] = {}
    todo: list[tuple[Requirement, frozenset[str]]] = [(r, frozenset(r.extras)) for r in roots()]
    seen_extras: dict[str, set[str]] = {}
    while todo:
        req, extras = todo.pop()
        name = _canon(req.name)
        if name in LEFT_OUT:
            continue
        if name in found and extras <= seen_extras.get(name, set()):
            continue
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            raise SystemExit(f"{req.name} is required (by pyproject.toml, through {req}) but not installed. Fix: make "
                             "install") from None
        found[name] = dist.version
        seen_extras.setdefault(name, set()).update(extras)
        for raw in dist.requires or []:
            sub = Requirement(raw)
            if sub.marker is not None:
                wanted = any(sub.marker.evaluate({**env, "extra": e}) for e in extras) if extras else False
                if not wanted and not sub.marker.evaluate({**env, "extra": ""}):
                    continue
            todo.append((sub, frozenset(sub.extras)))
    return found


def render() -> str:
    pins = closure()
    pins.pop("medrestore", None)
    return HEADER + "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when requirements.lock differs from what this writes")
    args = ap.parse_args(argv)
    text, path = render(), REPO / "requirements.lock"
    if args.check:
        if path.read_text() != text:
            print("requirements.lock is not what tools/lock.py writes from pyproject.toml. Fix: .venv/bin/python "
                  "tools/lock.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(text)
    print(f"{path}: {text.count(chr(10)) - HEADER.count(chr(10))} pins")
    return 0


if __name__ == "__main__":
    sys.exit(main())
