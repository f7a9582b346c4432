"""DVC's views of the pipeline, derived from params.yaml: the top-level ``plots:`` of dvc.yaml (one
chart per task, its models' validation PSNR against the training step) and the ``dvc exp show``
columns of the headline (``make exp-show``).

A new trained model (an entry of ``train.runs``, ``train.finetune``, ``train.chains`` or
``train.vessel``) belongs in its task's chart: ``tests/test_dvc_views.py`` checks dvc.yaml against
:func:`task_curves`, and

    python -m medrestore.pipeline.views --write

rewrites dvc.yaml's top-level ``plots:`` block (the last block of the file) from params.yaml.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from medrestore.core.io import write_text_atomic
from medrestore.pipeline.paths import model_dir

REPO = Path(__file__).resolve().parents[3]
#: The columns of ``dvc exp show`` kept beside the headline's (``make exp-show``).
EXP_COLUMNS = ("Experiment", "Created", "State")
#: What each chart draws from a model's ``curve.csv`` (written by the training engine).
CURVE_X, CURVE_Y = "step", "val_psnr"
#: The charts' template (``.dvc/plots/by_model.json``): one colour per model, validated steps only.
TEMPLATE = "by_model"


def trained_methods(train: Mapping[str, Any]) -> dict[str, list[str]]:
    """task -> the methods its train, finetune, train_chain and train_vessel stages write (params.yaml's
    ``train`` section; a run's folder is ``artifacts/models/TASK/METHOD``, METHOD its ``method`` or else
    its ``model``), sorted."""
    out: dict[str, set[str]] = {}
    for group in ("runs", "finetune", "chains", "vessel"):
        for entry in (train.get(group) or {}).values():
            out.setdefault(entry["task"], set()).add(entry.get("method") or entry["model"])
    return {task: sorted(methods) for task, methods in sorted(out.items())}


def task_curves(params: Mapping[str, Any]) -> dict[str, list[str]]:
    """task -> the ``curve.csv`` of each of its trained methods, for every task of ``corrupt.tasks``."""
    methods = trained_methods(params.get("train") or {})
    return {task: [(model_dir(task, m) / "curve.csv").as_posix() for m in methods.get(task, [])]
            for task in sorted((params.get("corrupt") or {}).get("tasks") or {})}


def plot_id(task: str) -> str:
    return f"{task} validation PSNR"


def plots_block(params: Mapping[str, Any]) -> str:
    """dvc.yaml's top-level ``plots:`` block: one chart per task with a trained model."""
    lines = ["plots:",
             "  # one chart per task: each of its models' validation PSNR against the training step (the models'",
             "  # curve.csv). Generated from params.yaml: python -m medrestore.pipeline.views --write"]
    for task, curves in task_curves(params).items():
        if not curves:
            continue
        lines += [f"  - {plot_id(task)}:", f"      template: {TEMPLATE}", f"      x: {CURVE_X}", "      y:"]
        lines += [f"        {c}: {CURVE_Y}" for c in curves]
        lines += [f"      title: '{task}: validation PSNR of each model'", "      x_label: training step",
                  "      y_label: validation PSNR (dB)"]
    return "\n".join(lines) + "\n"


def keep_pattern(tasks: Iterable[str]) -> str:
    """The ``dvc exp show --keep`` regex of :data:`EXP_COLUMNS` and the headline columns
    (``reports/headline.json``: ``TASK.VARIANT``) of ``tasks``."""
    names = "|".join(re.escape(t) for t in sorted(tasks))
    return f"^({'|'.join(EXP_COLUMNS)})$|^({names})\\."


def sync(repo: Path = REPO) -> bool:
    """Rewrite dvc.yaml's top-level ``plots:`` block (or append one) from params.yaml; True if it changed."""
    from medrestore.core.io import load_yaml

    path = repo / "dvc.yaml"
    text = path.read_text()
    block = plots_block(load_yaml((repo / "params.yaml").read_text()))
    found = re.search(r"^plots:\n(?:(?:[ #].*)?\n)*", text, flags=re.M)
    if found and text[found.end():].strip():
        raise ValueError(
            f"{path}: the top-level plots: block is not the last one. Fix: move it to the end of the file."
        )
    new = (text[:found.start()] if found else text.rstrip("\n") + "\n\n") + block
    if new == text:
        return False
    write_text_atomic(path, new)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="DVC's views derived from params.yaml: dvc.yaml's top-level plots, the "
                                             "exp show columns.")
    ap.add_argument("--write", action="store_true", help="rewrite dvc.yaml's top-level plots: block from params.yaml")
    ap.add_argument("--keep", action="store_true", help="print the dvc exp show --keep pattern of the headline columns")
    args = ap.parse_args(argv)
    if args.keep:
        from medrestore.core.io import load_yaml

        params = Path("params.yaml")
        if not params.is_file():
            print(f"{params.resolve()}: no such file. Fix: run from the repository root.", file=sys.stderr)
            return 2
        print(keep_pattern((load_yaml(params.read_text()).get("corrupt") or {}).get("tasks") or {}))
        return 0
    if args.write:
        print("dvc.yaml: plots " + ("updated" if sync() else "already in line"))
        return 0
    ap.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
