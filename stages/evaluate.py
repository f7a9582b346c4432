"""evaluate TASK: restore the test images with every model and baseline; score them."""

from pathlib import Path

from _common import arg, params, run

from medrestore.evaluation import evaluate_task
from medrestore.io import atomic_dir


def main() -> None:
    task = arg(1)
    all_p = params()
    p = all_p["evaluate"]
    with run(f"evaluate@{task}", p) as tracker, atomic_dir(Path("artifacts/eval") / task) as tmp:
        evaluate_task(
            task, Path("artifacts/patches"), Path("artifacts/corrupt") / task, Path("artifacts/models") / task, tmp,
            baselines=p["baselines"], tile=p["tile"], overlap=p["overlap"], seed=all_p["seed"], assets_dir=p["assets"], tracker=tracker,
        )


if __name__ == "__main__":
    main()
