"""The report's tables as (header, rows) of strings: per task and test corruption, the lineage, the
convergence verdicts, the costs, the paired tests and the best methods; and the headline numbers
of ``reports/metrics.json``. Columns, titles, decimals and directions come from the metric registry
(:data:`medrestore.evaluation.metrics.REGISTRY`)."""

from __future__ import annotations

import json
from pathlib import Path

from medrestore.core.io import read_json
from medrestore.evaluation import (
    metrics as M,  # its views are read at call time: a metric may be registered after import
)
from medrestore.evaluation.gates import below_input_in_summary, failed_in_summary
from medrestore.evaluation.metrics import digits
from medrestore.evaluation.metrics import header as column_title
from medrestore.report.policy import best_by, best_on_vessels, eligible, label

KIND_ORDER = {"reference": 0, "input": 1, "baseline": 2, "model": 3}


def table_metrics(summary: dict, variant: str) -> tuple[str, ...]:
    """The image metrics, then the vessel scores against the manual masks when the test images have
    them (the clinical reference), else against the segmentation of the clean image."""
    has_manual = any("manual_auc" in v.get(variant, {}) for v in summary["methods"].values())
    prefix = "manual" if has_manual else "ref"
    return M.TABLE_IMAGE + tuple(f"{prefix}_{k}" for k in M.TABLE_VESSEL)


def sorted_methods(summary: dict, variant: str) -> list[str]:
    """Methods in table order: the clean reference, the input, baselines, models (by name within each)."""
    return sorted(summary["methods"], key=lambda m: (KIND_ORDER.get(summary["methods"][m][variant]["kind"], 9), m))


def _fmt(stats: dict | None, metric: str) -> str:
    """Mean and 95% interval (the mean alone when the interval is a point), at the metric's decimals."""
    if not stats or metric not in stats:
        return "–"
    m = stats[metric]
    lo, hi = m["ci95"]
    fmt = f"{{:.{digits(metric)}f}}"
    if lo == hi:
        return fmt.format(m["mean"])
    return f"{fmt.format(m['mean'])} [{fmt.format(lo)}, {fmt.format(hi)}]"


def sample_size(stats: dict) -> str:
    """What a row's intervals rest on: "8 / 4" (test images / subjects); the number of images alone
    in a summary written before subjects were counted."""
    if "n_subjects" in stats:
        return f"{stats['n_images']} / {stats['n_subjects']}"
    return f"{stats['n']} / –" if "n" in stats else "–"


def task_table(summary: dict, variant: str,
               converged: dict[str, dict] | None = None) -> tuple[list[str], list[list[str]]]:
    """Rows of one task/variant table, best value per column marked with ``**`` (among baselines and
    converged models: a model that did not converge, or failed here (below its input:
    :mod:`medrestore.evaluation.gates`), is marked in its row and never called best)."""
    methods = sorted_methods(summary, variant)
    failed = below_input_in_summary(summary, variant)  # trained models (failed) and baselines below their input
    best: dict[str, str] = {}
    metrics = table_metrics(summary, variant)
    for metric in metrics:
        cands = {
            m: summary["methods"][m][variant][metric]["mean"]
            for m in methods
            if eligible(m, summary["methods"][m][variant]["kind"], converged,
                        failed) and metric in summary["methods"][m][variant]
        }
        if cands:
            pick = min if metric in M.LOWER_IS_BETTER else max
            best[metric] = pick(cands, key=cands.get)
    header = ["method", "kind", *(column_title(m) for m in metrics), "images / subjects"]
    rows = []
    for m in methods:
        stats = summary["methods"][m][variant]
        cells = [_fmt(stats, k) for k in metrics]
        cells = [f"**{c}**" if best.get(k) == m else c for c, k in zip(cells, metrics)]
        rows.append([label(m, converged, failed), stats["kind"], *cells, sample_size(stats)])
    return header, rows


def failed_anywhere(summary: dict) -> set[str]:
    """The trained models that failed on at least one test corruption (for the task-level tables)."""
    return set().union(*(failed_in_summary(summary, v) for v in summary.get("variants", [])))


def _short(md5: str | None) -> str:
    return (md5 or "-").replace(".dir", "")[:10]


def _params_digest(entry: dict) -> str:
    import hashlib

    blob = json.dumps(entry.get("params", {}), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def lineage_rows(task: str, methods: list[str], summary: dict, stages: dict, models_root: Path,
                 converged: dict[str, dict] | None = None) -> tuple[list[str], list[list[str]]]:
    """Per method: the DVC stage that produced it, the md5 of its model (as dvc.lock records it), of
    the task's corrupted data and of the evaluation code, a digest of its locked params, and the
    command that prints the rest of the chain (git commit, MLflow run)."""
    header = ["method", "stage", "model md5", "data md5 (corrupt)", "params digest", "full chain"]
    rows = []
    corrupt = stages.get(f"corrupt@{task}", {})
    data_md5 = _short(next((o.get("md5") for o in corrupt.get("outs", [])), None))
    evaluate = stages.get(f"evaluate@{task}", {})
    failed = failed_anywhere(summary)
    for m in methods:
        kind = summary["methods"][m][summary["variants"][0]]["kind"]
        if kind == "model":
            model_file = (Path(models_root) / task / m / "model.safetensors").as_posix()
            name, entry = next(
                (
                    (n, e)
                    for n, e in stages.items()
                    if n.startswith(("train@", "finetune@", "train_chain@"))
                    and any(o["path"] == model_file for o in e.get("outs", []))
                ),
                (None, {}),
            )
            md5 = next((o.get("md5") for o in entry.get("outs", []) if o["path"] == model_file), None)
            rows.append([label(m, converged, failed), name or "-", _short(md5), data_md5,
                         _params_digest(entry) if entry else "-", f"`medrestore lineage {model_file}`"])
        else:
            rows.append([m, f"evaluate@{task}", "-", data_md5, _params_digest(evaluate) if evaluate else "-",
                         f"`medrestore lineage artifacts/eval/{task}/summary.json`"])
    return header, rows


def paired_rows(summary: dict, variant: str,
                converged: dict[str, dict] | None = None) -> tuple[list[str], list[list[str]]] | None:
    """Each model minus the best classical baseline on the same test images."""
    entry = summary.get("paired_tests", {}).get(variant)
    if not entry or not entry.get("models"):
        return None
    header = ["model", f"vs {entry['baseline']}", "mean difference [95% CI]", "model better / worse (subjects)",
              "Wilcoxon p (smallest possible)",
              "images / subjects"]
    rows = []
    failed = failed_in_summary(summary, variant)
    shown = [m for m in table_metrics(summary, variant) if M.METRICS[m].paired]
    for model, tests in sorted(entry["models"].items()):
        for metric in shown:
            t = tests.get(metric)
            if not t or "mean_diff" not in t:
                continue
            fmt = f"{{:+.{digits(metric)}f}}"
            rows.append(
                [
                    label(model, converged, failed),
                    column_title(metric),
                    f"{fmt.format(t['mean_diff'])} [{fmt.format(t['ci95'][0])}, {fmt.format(t['ci95'][1])}]",
                    f"{t['model_better']} / {t['baseline_better']} of {t['n']}"
                    if t.get("higher_is_better", True)
                    else f"{t['baseline_better']} / {t['model_better']} of {t['n']}",
                    f"{t['wilcoxon_p']:.3f} ({t['min_p']:.3f})",
                    sample_size({"n": t["n"], **t}),
                ]
            )
    return header, rows


def cost_rows(summary: dict, converged: dict[str, dict] | None = None) -> tuple[list[str], list[list[str]]] | None:
    """Parameters and FLOPs per output megapixel. Measured seconds are machine-dependent: they are in
    ``artifacts/eval/<task>/cost.json`` and ``reports/bench.md``, not in this reproducible report."""
    methods = (summary.get("cost") or {}).get("methods") or {}
    if not methods:
        return None
    header = ["method", "parameters", "GFLOPs per output megapixel"]
    failed = failed_anywhere(summary)
    rows = []
    for m in sorted(methods):
        p, f = methods[m].get("parameters"), methods[m].get("flops_per_mpix")
        rows.append([label(m, converged, failed), f"{p:,}" if isinstance(p, int) else "–",
                     f"{f / 1e9:.1f}" if isinstance(f, (int, float)) else "–"])
    return header, rows


def headline_numbers(stats: dict, convergence: dict | None, failed: bool | None = None) -> dict:
    out = {}
    for name, columns in M.headline().items():
        col = next((c for c in columns if c in stats), None)
        if col is not None:
            out[name] = stats[col]["mean"]
    if convergence is not None:
        out["converged"] = bool(convergence["converged"])
    if failed is not None:
        out["failed"] = bool(failed)
    return out


def convergence_rows(conv: dict[str, dict], task_models: Path) -> tuple[list[str], list[list[str]]]:
    header = ["model", "steps", "best val PSNR", "gain over last quarter (dB)", "converged"]
    rows = []
    for m, v in sorted(conv.items()):
        metrics = read_json(task_models / m / "metrics.json") if (task_models / m / "metrics.json").is_file() else {}
        gain = v.get("last_quarter_gain_db")
        rows.append(
            [
                m,
                str(metrics.get("steps", "?")),
                f"{metrics['best_val_psnr']:.2f}" if "best_val_psnr" in metrics else "–",
                "–" if gain is None else f"{gain:+.2f}",
                ("yes" + (f" ({v['note']})" if v.get("note") else ""))
                if v["converged"]
                else f"no ({v.get('why', 'still improving')})",
            ]
        )
    return header, rows


def best_rows(eval_root: Path, tasks: list[str],
              conv_by_task: dict[str, dict[str, dict]]) -> tuple[list[str], list[list[str]]]:
    """Per task and test corruption: the best method in PSNR inside the FOV, and the best on vessels,
    among baselines and converged models (:func:`best_on_vessels`)."""
    header = ["task [test]", "best in PSNR inside the FOV",
              "best on vessels (most thin vessels kept above chance, inventing at most half the input's share)"]
    rows = []
    for task in tasks:
        summary = read_json(Path(eval_root) / task / "summary.json")
        conv = conv_by_task.get(task, {})
        for variant in summary["variants"]:
            top = best_by(summary, variant, conv)
            vessels = best_on_vessels(summary, variant, conv)
            rows.append([f"{task} [{variant}]", top or "none: no baseline or converged model beats the degraded input",
                         vessels or "none keeps thin vessels above chance without inventing"])
    return header, rows

