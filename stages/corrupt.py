"""corrupt TASK: degraded train/val patches and full-size degraded test images for one task."""

from pathlib import Path

from _common import arg, params, run

from medrestore.data.corrupt import corrupt_task
from medrestore.io import atomic_dir

PATCHES = Path("artifacts/patches")


def main() -> None:
    task = arg(1)
    all_p = params()
    spec = all_p["corrupt"]["tasks"][task]
    with run(f"corrupt@{task}", spec), atomic_dir(Path("artifacts/corrupt") / task) as tmp:
        corrupt_task(PATCHES, tmp, task=task, spec=spec, seed=all_p["seed"])


if __name__ == "__main__":
    main()
