"""What every stage script shares: its params and its MLflow run."""

from __future__ import annotations

import os
import sys

from medrestore.io import load_params
from medrestore.tracking import stage_run


def params() -> dict:
    return load_params()


def run(name: str, section_params: dict):
    """The stage's MLflow run, named after ``DVC_STAGE`` when DVC runs it."""
    p = params()
    return stage_run(os.environ.get("DVC_STAGE", name), section_params, required=bool(p.get("tracking", {}).get("required", False)))


def arg(i: int) -> str:
    if len(sys.argv) <= i:
        raise SystemExit(f"usage: {sys.argv[0]} KEY")
    return sys.argv[i]
