"""The one reader of ``dvc.lock``: what each stage of the last ``dvc repro`` ran with and wrote.

Used by the lineage of a file (:mod:`medrestore.tracking.lineage`), the report's lineage tables
(:mod:`medrestore.report`) and the benchmark's comparison of two runs (``benchmarks/bench.py``)."""

from __future__ import annotations

from pathlib import Path

import yaml

from medrestore.core.io import InputError, load_yaml


def read_lock(path: Path, *, required: bool = False) -> dict:
    """``dvc.lock`` parsed (``{}`` when empty). A missing file is ``{}``, or with ``required`` an
    error that says how to make it."""
    path = Path(path)
    if not path.is_file():
        if required:
            raise InputError(f"{path}: missing. Fix: run `dvc repro` first (lineage is read from dvc.lock).")
        return {}
    try:
        lock = load_yaml(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid YAML ({' '.join(str(exc).split())[:300]}). Fix: restore it with "
                         f"`git checkout {path.name}` (or rerun `dvc repro`, which rewrites it).") from None
    if not isinstance(lock, dict):
        raise InputError(f"{path}: not a dvc.lock (a mapping with 'stages'). Fix: restore it with `git checkout "
                         f"{path.name}`.")
    return lock


def lock_stages(path: Path, *, required: bool = False) -> dict:
    """Stage name -> its ``dvc.lock`` entry (``cmd``, ``deps``, ``params``, ``outs``)."""
    return read_lock(path, required=required).get("stages") or {}


def find_stage(lock: dict, rel: str) -> tuple[str, dict, dict] | None:
    """(stage name, stage entry, out entry) of the stage whose output is ``rel`` or contains it."""
    for name, stage in (lock.get("stages") or {}).items():
        for out in stage.get("outs", []):
            p = out["path"]
            if rel == p or rel.startswith(p.rstrip("/") + "/"):
                return name, stage, out
    return None


def output_md5s(stages: dict, names: set[str]) -> dict[str, str | None]:
    """``"<stage>:<output path>"`` -> md5 of every output of the stages ``names`` (those in ``stages``)."""
    return {f"{st}:{o['path']}": o.get("md5") for st in names if st in stages for o in stages[st].get("outs", [])}
