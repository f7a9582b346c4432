"""report: reports/index.html, reports/report.md, reports/metrics.json, reports/claims.json and the
figures (:func:`medrestore.report.build_report`); the best model of each task is registered in
MLflow's model registry with its lineage."""

from __future__ import annotations

from medrestore.evaluation.gates import NO_CHAMPION
from medrestore.pipeline.paths import (
    EVAL,
    EXTERNAL,
    MODELS,
    PATCHES,
    REPORTS,
    SCORING_SEGMENTER,
    SEGMENTER,
    VESSEL_SWEEP,
)
from medrestore.pipeline.stage import params, run
from medrestore.report import best_models, build_report
from medrestore.serving.mlflow_model import alias_for_run
from medrestore.tracking.lineage import register_best_models
from medrestore.tracking.runs import tag_outputs
from medrestore.vessels import load_vessel_segmenter

#: What the stage writes under reports/ (dvc.yaml's outs, metrics and plots of the stage), tagged on its run.
OUTPUTS = ("index.html", "report.md", "figures", "claims.json", "targets.json", "vessel_aware.json", "metrics.json",
           "headline.json", "report_figures", "plots")


def main(argv: list[str] | None = None) -> None:
    """``report`` (no arguments): every task of ``corrupt.tasks``, with ``make bench``'s
    ``reports/bench.json`` as the performance section."""
    p = params()
    tasks = sorted(p["corrupt"]["tasks"])
    with run("report", {"tasks": tasks}, p) as tracker:
        segmenter, _ = load_vessel_segmenter(SEGMENTER)
        scoring_segmenter = None
        if (SCORING_SEGMENTER / "model.json").is_file():
            scoring_segmenter = load_vessel_segmenter(SCORING_SEGMENTER)[0]
        build_report(p, tasks, EVAL, PATCHES, MODELS, REPORTS, segmenter=segmenter, segmenter_dir=SEGMENTER,
                     bench_path=REPORTS / "bench.json",
                     scoring_segmenter=scoring_segmenter, sweep_path=VESSEL_SWEEP, external_root=EXTERNAL)
        tag_outputs(tracker, [REPORTS / name for name in OUTPUTS])
        for name in ("report.md", "index.html", "metrics.json"):  # index.html holds the figures inline
            tracker.log_artifact(REPORTS / name)
        best = best_models(EVAL, tasks, models_root=MODELS, train=p["train"])
        registered = register_best_models(best, MODELS, tracker=tracker, tasks=tasks, eval_root=EVAL)
        for task, version in registered.items():
            print(f"[medrestore] {version} is {task}'s best converged model (alias @{alias_for_run()})")
        for task in sorted(set(tasks) - set(best)):
            print(f"[medrestore] {task}: no champion (alias @{alias_for_run()} not set): {NO_CHAMPION}")
