"""corrupt TASK: degraded train/val patches and full-size degraded test images for one task."""

from __future__ import annotations

from medrestore.core.io import InputError, atomic_dir
from medrestore.data.corrupt import corrupt_task
from medrestore.pipeline.paths import PATCHES, PREPARED, corrupt_dir
from medrestore.pipeline.stage import arg, params, run
from medrestore.tracking.runs import log_datasets, tag_outputs


def main(argv: list[str] | None = None) -> None:
    task = arg(argv, 0, "TASK")
    all_p = params()
    tasks = all_p["corrupt"]["tasks"]
    if task not in tasks:
        raise InputError(f"params.yaml: no task {task!r} in corrupt.tasks. Fix: use one of {', '.join(tasks)}.")
    spec = tasks[task]
    with run(f"corrupt@{task}", spec, all_p) as tracker:
        log_datasets(tracker, [PATCHES, PREPARED], "source")
        with atomic_dir(corrupt_dir(task)) as tmp:
            corrupt_task(PATCHES, tmp, task=task, spec=spec, seed=all_p["seed"], prepared_dir=PREPARED)
        tag_outputs(tracker, [corrupt_dir(task)])
