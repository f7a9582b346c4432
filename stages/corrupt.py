"""corrupt TASK: degraded train/val patches and full-size degraded test images for one task."""

from pathlib import Path

from _common import arg, params, run

from medrestore.data.corrupt import corrupt_task
from medrestore.io import InputError, atomic_dir

PATCHES, PREPARED = Path("artifacts/patches"), Path("artifacts/prepared")


def main() -> None:
    task = arg(1)
    all_p = params()
    tasks = all_p["corrupt"]["tasks"]
    if task not in tasks:
        raise InputError(f"params.yaml: no task {task!r} in corrupt.tasks. Fix: use one of {', '.join(tasks)}.")
    spec = tasks[task]
    with run(f"corrupt@{task}", spec), atomic_dir(Path("artifacts/corrupt") / task) as tmp:
        corrupt_task(PATCHES, tmp, task=task, spec=spec, seed=all_p["seed"], prepared_dir=PREPARED)


if __name__ == "__main__":
    main()
