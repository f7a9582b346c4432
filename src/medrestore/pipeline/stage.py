"""What every stage shares: its params, its command-line argument and its MLflow run."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from medrestore.io import InputError, load_params
from medrestore.params import validate_params
from medrestore.tracking import Tracker, stage_run


def params() -> dict:
    """params.yaml, checked against its schema (:mod:`medrestore.params`) before the stage reads it."""
    return dict(validate_params(load_params()))


def run(name: str, section_params: dict[str, Any], all_params: dict | None = None) -> AbstractContextManager[Tracker]:
    """The stage's MLflow run, named after ``DVC_STAGE`` when DVC runs it."""
    p = params() if all_params is None else all_params
    return stage_run(os.environ.get("DVC_STAGE", name), section_params, required=bool(p.get("tracking", {}).get("required", False)))


def arg(argv: list[str] | None, i: int, usage: str = "KEY") -> str:
    """The ``i``-th argument (0-based, after the script) or a usage error."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) <= i:
        raise SystemExit(f"usage: {os.path.basename(sys.argv[0])} {usage}")
    return argv[i]


def execute(main: Callable[[list[str]], None]) -> None:
    """Run a stage's ``main`` on the command line: bad input (:class:`InputError`) ends it with the
    message and exit status 2, without a traceback; anything else is a bug and keeps its traceback."""
    try:
        main(sys.argv[1:])
    except InputError as exc:
        print(f"[medrestore] ERROR: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
