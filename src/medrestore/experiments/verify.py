"""``medrestore verify``: after ``dvc repro`` on another machine, each published number against this run.

Training is deterministic on one machine, not across CPUs (other vector units round differently), so
a rerun elsewhere moves the trained models' numbers a little; runs that params.yaml trains in
``bf16-mixed`` move more (bfloat16 kernels differ between CPUs with bf16 units and those that emulate
them), and the output names them. For every number of the committed
``reports/metrics.json`` (task -> method -> test variant -> metric) this says:

- ``identical``: this run's value is the committed one (to the 6 decimals stored);
- ``within``: it differs, but the committed value lies inside this run's 95 % bootstrap interval over
  the test subjects (``artifacts/eval/TASK/summary.json``, the column the report took the number from:
  the intervals of :func:`medrestore.evaluation.scoring.interval`, the report's own);
- ``outside``: the committed value is outside that interval, or the number (or its interval) is
  missing here, or a verdict (``converged``, ``failed``) changed, or its task was not evaluated in
  this checkout (no ``artifacts/eval/TASK/summary.json``).

This run's numbers are recomputed from its evaluation outputs (the means of ``summary.json``, as the
report stage computes them), not read from ``reports/metrics.json``, which is the committed file until
the report stage runs again; only the convergence verdicts come from it. Where no task was evaluated
in this checkout (a fresh clone) there is nothing to compare, and verify refuses rather than compare
the committed numbers with themselves.

The exit status is 1 when any number is ``outside``, so a reader can check a published report on
their own machine with one command.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from medrestore.core.io import InputError, read_json
from medrestore.evaluation.metrics import headline

IDENTICAL, WITHIN, OUTSIDE = "identical", "within", "outside"


def _fmt(v: Any) -> str:
    return "-" if v is None else (str(v) if isinstance(v, bool) else f"{v:.6g}")


def committed_metrics(source: str, root: Path) -> tuple[dict, str]:
    """The published ``metrics.json``: a file path, or a git revision of ``root`` (its
    ``reports/metrics.json`` at that commit)."""
    path = Path(source)
    fix = ("Fix: give --committed a metrics.json file written by the report stage, or a commit whose "
           "reports/metrics.json is (default HEAD).")
    if path.is_file():
        return load_metrics(path.read_bytes(), str(path), fix), str(path)
    res = subprocess.run(["git", "show", f"{source}:reports/metrics.json"], cwd=root, capture_output=True)
    if res.returncode != 0:
        raise InputError(f"{source}: neither a file nor a git revision with reports/metrics.json "
                         f"({res.stderr.decode(errors='replace').strip()[:200]}). {fix}")
    return load_metrics(res.stdout, f"{source}:reports/metrics.json", fix), f"{source}:reports/metrics.json"


def load_metrics(data: bytes, where: str, fix: str) -> dict:
    """A metrics.json's bytes as task -> method -> variant -> metric -> number, or :class:`InputError`."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{where}: not text (binary bytes), not a metrics.json. {fix}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON ({exc}). {fix}") from None
    if not isinstance(obj, dict):
        raise InputError(f"{where}: a JSON {type(obj).__name__}, not the object task -> method -> variant -> metric. "
                         f"{fix}")
    for task, methods in obj.items():
        if not isinstance(methods, dict) or not all(
            isinstance(variants,
                       dict) and all(isinstance(numbers,
                                                dict) for numbers in variants.values()) for variants in methods.values()
        ):
            raise InputError(f"{where}: task {task!r} is not an object method -> variant -> metric -> number. {fix}")
    return obj


def _interval(stats: dict, metric: str) -> dict | None:
    """The summary's interval of a headline number: mean, ci95, n_images, n_subjects."""
    for col in headline().get(metric, ()):
        if col in stats:
            return stats[col]
    return None


def verdicts(committed: dict, ours: dict, eval_root: Path) -> list[dict[str, Any]]:
    """One row per committed number: task, method, variant, metric, committed, ours, ci95, verdict."""
    rows = []
    for task, methods in sorted(committed.items()):
        summary_path = Path(eval_root) / task / "summary.json"
        evaluated = summary_path.is_file()
        summary = read_json(summary_path) if evaluated else {}
        for method, variants in sorted(methods.items()):
            for variant, numbers in sorted(variants.items()):
                stats = summary.get("methods", {}).get(method, {}).get(variant, {})
                for metric, value in sorted(numbers.items()):
                    mine = ours.get(task, {}).get(method, {}).get(variant, {}).get(metric)
                    row = {"task": task, "method": method, "variant": variant, "metric": metric,
                           "committed": value, "ours": mine, "ci95": None}
                    if not evaluated:
                        row["verdict"], row["why"] = OUTSIDE, f"not evaluated in this checkout ({summary_path} missing)"
                    elif mine is None:
                        row["verdict"], row["why"] = OUTSIDE, "missing in this run"
                    elif isinstance(value, bool) or isinstance(mine, bool):
                        row["verdict"] = IDENTICAL if value == mine else OUTSIDE
                        if value != mine:
                            row["why"] = (
                                "convergence verdict changed" if metric == "converged" else f"{metric} verdict changed"
                            )
                    elif value == mine or (
                        isinstance(value, float) and isinstance(mine, float) and math.isclose(value, mine, abs_tol=5e-7)
                    ):
                        row["verdict"] = IDENTICAL
                    else:
                        found = _interval(stats, metric) or {}
                        ci = found.get("ci95")
                        row["ci95"] = ci
                        row.update({k: found[k] for k in ("n_images", "n_subjects") if k in found})
                        if ci is None or any(c is None or not math.isfinite(c) for c in ci):
                            row["verdict"], row["why"] = OUTSIDE, f"no interval in {summary_path}"
                        else:
                            row["verdict"] = WITHIN if ci[0] <= value <= ci[1] else OUTSIDE
                    rows.append(row)
    return rows


def verify(root: Path, committed: str = "HEAD", metrics: Path | None = None,
           eval_root: Path | None = None) -> tuple[list[dict], str]:
    root = Path(root)
    metrics = Path(metrics) if metrics else root / "reports" / "metrics.json"
    eval_root = Path(eval_root) if eval_root else root / "artifacts" / "eval"
    if not metrics.is_file():
        raise InputError(f"{metrics}: missing. Fix: run `dvc repro` (or `make repro`) first.")
    published, source = committed_metrics(committed, root)
    ours = load_metrics(metrics.read_bytes(), str(metrics),
                        "Fix: rebuild it with `dvc repro report` (or `git checkout` it).")
    if published and not any((eval_root / task / "summary.json").is_file() for task in published):
        raise InputError(
            f"nothing to compare: no task of {source} was evaluated in this checkout ({eval_root}/TASK/summary.json "
            f"missing for {', '.join(sorted(published))}), so {metrics} holds the committed numbers, not this "
            "checkout's. Fix: run `make repro` (or `dvc repro`) first, then verify."
        )
    return verdicts(published, recomputed(ours, published, eval_root), eval_root), source


def recomputed(ours: dict, published: dict, eval_root: Path) -> dict:
    """``ours`` with every number of an evaluated task recomputed from its ``summary.json``
    (:func:`medrestore.report.tables.headline_numbers`); ``failed`` recomputed from it too
    (:func:`medrestore.evaluation.gates.failed_in_summary`, where the summary says each method's kind);
    ``converged`` kept from ``ours``."""
    from medrestore.evaluation.gates import failed_in_summary
    from medrestore.report.tables import headline_numbers

    out = {
        task: {m: {v: dict(n) for v, n in vs.items()} for m, vs in methods.items()} for task, methods in ours.items()
    }
    for task in published:
        path = Path(eval_root) / task / "summary.json"
        if not path.is_file():
            continue
        summary = read_json(path)
        methods = summary.get("methods") if isinstance(summary, dict) else None
        if not isinstance(methods, dict):
            raise InputError(f"{path}: no 'methods' of an evaluation summary. Fix: rerun the evaluation (`dvc repro "
                             f"evaluate@{task}`).")
        task_out = out.setdefault(task, {})
        failed = {variant: failed_in_summary(summary, variant) for variant in summary.get("variants") or []}
        for method, variants in methods.items():
            for variant, stats in (variants or {}).items():
                before = task_out.get(method, {}).get(variant, {})
                numbers = headline_numbers(stats, None)
                if "converged" in before:
                    numbers["converged"] = before["converged"]
                if "failed" in before:
                    numbers["failed"] = (method in failed.get(variant, set())) if "kind" in stats else before["failed"]
                task_out.setdefault(method, {})[variant] = numbers
    return out


def format_rows(rows: list[dict], source: str, only_changed: bool = False) -> str:
    lines = [f"{'task':14s} {'method':14s} {'variant':9s} {'metric':10s} {'published':>11s} {'this run':>11s}  verdict"]
    for r in rows:
        if only_changed and r["verdict"] == IDENTICAL:
            continue
        over = f" over {r['n_images']} images / {r['n_subjects']} subjects" if "n_subjects" in r else ""
        ci = f" (95% interval {r['ci95'][0]:.4g} .. {r['ci95'][1]:.4g}{over})" if r.get("ci95") else ""
        why = f" ({r['why']})" if r.get("why") else ""
        lines.append(f"{r['task']:14s} {r['method']:14s} {r['variant']:9s} {r['metric']:10s} "
                     f"{_fmt(r['committed']):>11s} {_fmt(r['ours']):>11s}  {r['verdict']}{ci}{why}")
    counts = Counter(r["verdict"] for r in rows)
    lines.append(f"{len(rows)} published numbers ({source}): {counts[IDENTICAL]} identical, {counts[WITHIN]} within "
                 f"their 95% interval, {counts[OUTSIDE]} outside")
    return "\n".join(lines)


def bf16_methods(root: Path) -> list[str]:
    """``TASK/METHOD`` of every run that ``root``'s params.yaml trains in a bf16 precision (none without one)."""
    from medrestore.core.io import load_params
    from medrestore.core.params import train_settings

    path = Path(root) / "params.yaml"
    if not path.is_file():
        return []
    params = load_params(path=path)
    train = params.get("train") or {}
    out = set()
    for group in ("runs", "finetune", "chains", "vessel"):
        for key, entry in (train.get(group) or {}).items():
            if str(train_settings(train, key, params.get("seed", 0)).get("precision", "")).startswith("bf16"):
                out.add(f"{entry['task']}/{entry.get('method') or entry['model']}")
    return sorted(out)


def bf16_note(rows: list[dict], methods: list[str]) -> str:
    """A line naming the bf16-trained methods among ``rows`` ('' when none)."""
    shown = sorted({f"{r['task']}/{r['method']}" for r in rows} & set(methods))
    if not shown:
        return ""
    return (f"trained in bf16-mixed (params.yaml): {', '.join(shown)}; on another CPU their numbers move more than "
            "float32 runs' (expect within, not identical; docs/reproducibility.md)")


def main(argv: list[str] | None = None) -> int:
    """``medrestore verify [--committed REV|FILE] [--all] [--json]``: exit 1 when a number is outside."""
    import argparse

    ap = argparse.ArgumentParser(prog="medrestore verify", description=__doc__.strip().splitlines()[0])
    ap.add_argument("--committed", default="HEAD",
                    help="the published numbers: a git revision (its reports/metrics.json) or a file")
    ap.add_argument("--root", type=Path, default=None, help="the workspace (default: the nearest folder with dvc.yaml)")
    ap.add_argument("--all", action="store_true", help="list the identical numbers too")
    ap.add_argument("--json", action="store_true", help="the rows as JSON")
    args = ap.parse_args(argv)
    from medrestore.core.io import workspace_root

    root = args.root or workspace_root()
    rows, source = verify(root, args.committed)
    bf16 = bf16_methods(root)
    if args.json:
        for r in rows:
            r["bf16"] = f"{r['task']}/{r['method']}" in bf16
        print(json.dumps(rows, indent=1))
    else:
        print(format_rows(rows, source, only_changed=not args.all))
        if note := bf16_note(rows, bf16):
            print(note)
    return 1 if any(r["verdict"] == OUTSIDE for r in rows) else 0
