"""report: reports/index.html, reports/report.md, reports/metrics.json and figures; the best model
of each task is registered in MLflow's model registry with its lineage."""

from pathlib import Path

from _common import params, run

from medrestore.lineage import register_best_models, tag_outputs
from medrestore.report import best_models, build_report
from medrestore.vessels import load_vessel_segmenter


def main() -> None:
    p = params()
    tasks = sorted(p["corrupt"]["tasks"])
    with run("report", {"tasks": tasks}) as tracker:
        segmenter, _ = load_vessel_segmenter(Path("artifacts/segmenter"))
        build_report(p, tasks, Path("artifacts/eval"), Path("artifacts/patches"), Path("artifacts/models"), Path("reports"),
                     segmenter=segmenter, segmenter_dir=Path("artifacts/segmenter"), bench_path=Path("reports/bench.json"))
        tag_outputs(tracker, [Path("reports/index.html"), Path("reports/report.md"), Path("reports/metrics.json")])
        registered = register_best_models(best_models(Path("artifacts/eval"), tasks, models_root=Path("artifacts/models"), train=p["train"]), Path("artifacts/models"), tracker=tracker)
        for task, version in registered.items():
            print(f"[medrestore] registered {version} (best of {task})")


if __name__ == "__main__":
    main()
