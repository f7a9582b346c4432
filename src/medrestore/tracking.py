"""MLflow runs tagged with DVC lineage.

Every stage execution is one MLflow run named after its DVC stage and tagged with the stage name,
the git commit (and whether the work tree was dirty), ``DVC_ROOT`` and ``DVC_EXP_NAME``. The
tracking store defaults to an SQLite file at the repository root, resolved from ``DVC_ROOT`` so
queued experiments share one database; ``MLFLOW_TRACKING_URI`` overrides it.

Run ids never go into DVC-tracked outputs (they would differ on every run); lineage is found
from MLflow by stage name and commit instead.

Logging failures (a tracking server that is down) never lose silently: each failed call is
counted and reported on stderr at the end of the run, and ``tracking.required: true`` in the
params turns them into errors.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

from medrestore.io import repo_root

EXPERIMENT = "medrestore"


def tracking_uri() -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(repo_root() / 'mlflow.db').as_posix()}"


def git_commit(root: Path | None = None) -> tuple[str, bool]:
    """(commit sha, dirty flag) of the repository, or ("unknown", False) outside git."""
    root = root or repo_root()
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, check=True
        ).stdout
        return sha, bool(status.strip())
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


def flatten(params: Any, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(params, dict):
        for k, v in params.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        out[prefix.rstrip(".")] = str(params)[:6000]
    return out


class Tracker:
    """Thin wrapper over the active MLflow run that counts, rather than hides, failed calls."""

    def __init__(self, run_id: str | None, required: bool) -> None:
        self.run_id = run_id
        self.required = required
        self.failures: list[str] = []

    def _call(self, what: str, fn, *args, **kwargs) -> None:
        if self.run_id is None:
            self.failures.append(what)
            return
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # mlflow raises many types (MlflowException, requests errors, OSError)
            if self.required:
                raise RuntimeError(f"MLflow {what} failed ({exc}). Fix: check MLFLOW_TRACKING_URI / the tracking server.") from exc
            self.failures.append(f"{what}: {type(exc).__name__}: {str(exc)[:200]}")

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import mlflow

        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        self._call("log_metrics", mlflow.log_metrics, clean, step=step)

    def log_params(self, params: dict[str, Any]) -> None:
        import mlflow

        self._call("log_params", mlflow.log_params, flatten(params))

    def set_tags(self, tags: dict[str, Any]) -> None:
        import mlflow

        self._call("set_tags", mlflow.set_tags, {k: str(v) for k, v in tags.items()})

    def log_artifact(self, path: Path) -> None:
        import mlflow

        self._call("log_artifact", mlflow.log_artifact, str(path))


def stage_tags(stage: str) -> dict[str, str]:
    sha, dirty = git_commit()
    return {
        "dvc_stage": stage,
        "git_commit": sha,
        "git_dirty": str(dirty).lower(),
        "dvc_root": os.environ.get("DVC_ROOT", str(repo_root())),
        "dvc_exp_name": os.environ.get("DVC_EXP_NAME", ""),
    }


@contextlib.contextmanager
def stage_run(stage: str | None, params: dict[str, Any], *, required: bool = False) -> Iterator[Tracker]:
    """Open one MLflow run for a stage execution (``stage`` defaults to ``DVC_STAGE``)."""
    stage = stage or os.environ.get("DVC_STAGE") or Path(sys.argv[0]).stem
    try:
        import mlflow

        mlflow.set_tracking_uri(tracking_uri())
        mlflow.set_experiment(EXPERIMENT)
        run = mlflow.start_run(run_name=stage)
    except Exception as exc:
        if required:
            raise RuntimeError(f"MLflow is unreachable at {tracking_uri()} ({exc}). Fix: start it or unset MLFLOW_TRACKING_URI.") from exc
        print(f"[medrestore] WARNING: MLflow unreachable at {tracking_uri()} ({exc}); this run is NOT tracked.", file=sys.stderr)
        tracker = Tracker(None, required)
        yield tracker
        return
    tracker = Tracker(run.info.run_id, required)
    status = "FAILED"
    try:
        tracker.set_tags(stage_tags(stage))
        tracker.log_params(params)
        yield tracker
        status = "FINISHED"
    finally:
        try:
            mlflow.end_run(status=status)
        except Exception as exc:
            tracker.failures.append(f"end_run: {exc}")
        if tracker.failures:
            print(
                f"[medrestore] WARNING: {len(tracker.failures)} MLflow call(s) of run {tracker.run_id} were not logged: "
                + "; ".join(tracker.failures[:5]),
                file=sys.stderr,
            )
