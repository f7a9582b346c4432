"""Per-stage times of one ``dvc repro``, read back from the MLflow runs its stages logged.

Every stage opens one MLflow run (tag ``dvc_stage``) around its work, so a repro's timeline is in the
tracking store: for each stage, the seconds inside its run, and the seconds between the previous
stage's end and this one's end that were not in the run (process start, imports, DVC hashing and
locking: the cost of running the pipeline as 29 processes).

    .venv/bin/python benchmarks/stage_times.py [--since $(cat start_epoch)] [--until $(cat end_epoch)] \\
        [--tracking-uri sqlite:///mlflow.db] [--title "..."] [--out table.txt]

``--since`` is when ``dvc repro`` started (seconds since the epoch): the first stage's wall time counts
from it (default: from the first run's start, so its process start is not counted) and only runs
that start after it are read. ``--until`` (the repro's end) leaves out later runs and adds the time
after the last stage (DVC writing dvc.lock).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def stage_rows(runs: list[tuple[str, float, float]], since: float | None = None,
               exclude: tuple[tuple[str, float], ...] = ()) -> list[dict]:
    """``runs``: (stage, start, end) in seconds, any order. One row per run in start order: ``wall``
    from the previous row's end (or ``since``) to this end, ``in_run`` its own span, ``between`` the rest.
    ``exclude``: (stage, start) of runs to leave out (a run of a stage that a later params change
    removed, a killed run): the time up to their end is in no row."""
    runs = sorted(runs, key=lambda r: r[1])
    rows, previous = [], runs[0][1] if since is None else since
    for stage, start, end in runs:
        if any(stage == st and abs(start - t0) < 1 for st, t0 in exclude):
            previous = end
            continue
        if start < previous:
            raise ValueError(f"stage {stage} started at {start:.1f}, before the previous one ended ({previous:.1f}): "
                             "runs of more than one repro (or of parallel workers) are mixed. Fix: narrow "
                             "--since/--until.")
        rows.append({"stage": stage, "wall": end - previous, "in_run": end - start, "between": start - previous})
        previous = end
    return rows


def format_table(rows: list[dict], title: str = "", tail: float | None = None) -> str:
    lines = [f"# {title}"] if title else []
    lines.append(f"{'stage':<46}{'wall s':>8}{'in run s':>10}{'between s':>10}")
    for r in rows:
        lines.append(f"{r['stage']:<46}{r['wall']:>8.1f}{r['in_run']:>10.1f}{r['between']:>10.1f}")
    wall, in_run, between = (sum(r[k] for r in rows) for k in ("wall", "in_run", "between"))
    if tail is not None:
        lines.append(f"{'(after the last stage: dvc.lock)':<46}{tail:>8.1f}{0.0:>10.1f}{tail:>10.1f}")
        wall, between = wall + tail, between + tail
    lines.append(f"{'total':<46}{wall:>8.1f}{in_run:>10.1f}{between:>10.1f}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--since", type=float, help="dvc repro's start, seconds since the epoch")
    ap.add_argument("--until", type=float, help="dvc repro's end, seconds since the epoch")
    ap.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    ap.add_argument("--title", default="")
    ap.add_argument("--exclude", nargs="*", default=[], metavar="STAGE@START",
                    help="leave out the run of STAGE that started at START (seconds since the epoch, as printed with "
                         "--starts)")
    ap.add_argument("--starts", action="store_true", help="print each run's start time too")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    import mlflow

    mlflow.set_tracking_uri(args.tracking_uri)
    query = [f"attributes.start_time >= {int(args.since * 1000)}"] if args.since is not None else []
    if args.until is not None:
        query.append(f"attributes.end_time <= {int(args.until * 1000)}")
    found = mlflow.search_runs(search_all_experiments=True, filter_string=" and ".join(query), output_format="list")
    runs = [(r.data.tags.get("dvc_stage", r.info.run_name), r.info.start_time / 1000, r.info.end_time / 1000)
            for r in found if r.info.end_time is not None and "dvc_stage" in r.data.tags]
    if not runs:
        raise SystemExit(f"no stage runs (MLflow runs tagged dvc_stage) in {args.tracking_uri} between --since and "
                         "--until. Fix: check --tracking-uri (the repro's store) and the times.")
    exclude = tuple((item.rpartition("@")[0], float(item.rpartition("@")[2])) for item in args.exclude)
    if args.starts:
        for stage, start, end in sorted(runs, key=lambda r: r[1]):
            print(f"{stage}@{start:.3f}  ({end - start:.1f} s)", file=sys.stderr)
    rows = stage_rows(runs, args.since, exclude)
    tail = None if args.until is None else args.until - max(end for _, _, end in runs)
    text = format_table(rows, args.title, tail)
    if args.out:
        args.out.write_text(text)
    sys.stdout.write(text)
    return text


if __name__ == "__main__":
    main()
