"""evaluate TASK: restore the test images with every model and baseline; score them.

Writes artifacts/eval/TASK/{per_image.csv,summary.json,restored/} (byte-identical on rerun) and
cost.json beside them (machine-dependent timings; declared a metric with `cache: false`)."""

from pathlib import Path

from _common import arg, params, run

from medrestore.evaluation import baselines_for, evaluate_task
from medrestore.io import atomic_dir
from medrestore.lineage import tag_outputs


def main() -> None:
    task = arg(1)
    all_p = params()
    p = all_p["evaluate"]
    out = Path("artifacts/eval") / task
    with run(f"evaluate@{task}", p) as tracker:
        with atomic_dir(out) as tmp:
            evaluate_task(
                task, Path("artifacts/patches"), Path("artifacts/corrupt") / task, Path("artifacts/models") / task, tmp,
                baselines=baselines_for(task, p["baselines"]), tile=p["tile"], overlap=p["overlap"], seed=all_p["seed"],
                assets_dir=p["assets"], tracker=tracker, segmenter_dir=Path("artifacts/segmenter"),
                device=p.get("device", "cpu"),
            )
        tag_outputs(tracker, [out])


if __name__ == "__main__":
    main()
