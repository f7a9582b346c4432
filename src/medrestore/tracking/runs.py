"""MLflow runs tagged with DVC lineage.

Every stage execution is one MLflow run named after its DVC stage and tagged with the stage name,
the git commit of the working tree it runs in (and whether its code or params differ from it:
:func:`git_commit`), ``DVC_ROOT``, ``DVC_EXP_NAME``, ``DVC_EXP_BASELINE_REV`` and the ``dvc repro``
that started it (:func:`repro_id`: one id shared by every stage of one ``dvc repro`` or ``dvc exp
run``); each output it wrote is a tag ``out_md5:<path>`` (:func:`tag_outputs`, the md5 DVC records)
and each DVC-tracked folder it read an MLflow dataset input (:func:`log_datasets`). The
tracking store defaults to an SQLite file at the repository root, resolved from ``DVC_ROOT`` so
queued experiments share one database; ``MLFLOW_TRACKING_URI`` overrides it.

Run ids never go into DVC-tracked outputs (they would differ on every run); lineage is found
from MLflow by stage name and commit instead.

Logging failures (a tracking server that is down) never lose silently: each failed call is
counted and reported on stderr at the end of the run, and ``tracking.required: true`` in the
params turns them into errors. Once a call has failed (after MLflow's own retries), the later
calls of the run are not tried again but counted, so a dead server costs seconds, not minutes.

MLflow's HTTP client retries 7 times with exponential backoff and waits 120 s per request by
default: minutes per call against a dead server. Unless they are set in the environment, stages
use ``MLFLOW_HTTP_REQUEST_MAX_RETRIES=2``, ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=1``,
``MLFLOW_HTTP_REQUEST_BACKOFF_JITTER=0.5`` and ``MLFLOW_HTTP_REQUEST_TIMEOUT=15`` (see
:data:`HTTP_DEFAULTS`): a dead server is given up after about 5 seconds.

Several processes may log at once (``dvc queue start -j N``, parallel stages). What MLflow
recommends for concurrent writers is a tracking server: ``make mlflow-server`` starts one on
127.0.0.1 over the repository's ``mlflow.db`` (``tools/mlflow_server.py``), and every stage, queued
experiments included, finds it through ``.mlflow/server.json`` at the repository root. Without it,
processes share the SQLite file directly: the creation of the database, the experiment and the run
is serialised with an exclusive lock on the database file (MLflow's schema migrations are not safe
to run concurrently), and a call that meets ``database is locked`` is tried again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medrestore.core.io import repo_root

EXPERIMENT = "medrestore"
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
LOCKED_RETRIES = 5  # tries of a call that meets "database is locked" (SQLite store), 0.5 s apart


def configure_http() -> None:
    """Bounded MLflow HTTP retries and timeouts (:data:`HTTP_DEFAULTS`), unless set in the environment."""
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI, else None."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix):]) if uri.startswith(prefix) else None


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """An exclusive lock on the SQLite database file while the store and the run are created."""
    db = sqlite_path(uri)
    if db is None or str(db) in ("", ":memory:"):
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db, "ab") as fh:  # an empty file is an empty SQLite database
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


#: Where ``tools/mlflow_server.py start`` (``make mlflow-server``) records the local tracking server it
#: started, under the repository root: ``{"uri": ..., "pid": ...}``.
SERVER_FILE = Path(".mlflow") / "server.json"


def local_server() -> str | None:
    """The URI of the repository's local tracking server when one is running (its record exists and
    its process is alive), else None."""
    import json

    record = repo_root() / SERVER_FILE
    try:
        info = json.loads(record.read_text())
        os.kill(int(info["pid"]), 0)  # signal 0: is it alive?
        return str(info["uri"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``; else the repository's local tracking server when it runs (``make
    mlflow-server``: what MLflow recommends for several concurrent writers, e.g. ``dvc queue start -j 2``:
    one server process owns the database); else the SQLite file ``mlflow.db`` at the repository root
    (``DVC_ROOT``: a queued experiment's stages run in a copy under ``.dvc/tmp/exps`` but log here)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return local_server() or f"sqlite:///{(repo_root() / 'mlflow.db').as_posix()}"


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: for a SQLite store, ``mlruns/`` at the repository root
    (MLflow's default, ``./mlruns`` of whichever process creates the experiment, would be a queued
    experiment's temporary copy, which DVC deletes); for a server, the server's choice (None)."""
    return (repo_root() / "mlruns").resolve().as_uri() if sqlite_path(uri) is not None else None


@contextlib.contextmanager
def repo_lock(name: str) -> Iterator[None]:
    """An exclusive lock shared by every process working on this repository (queued experiments
    included): ``.dvc/tmp/medrestore-<name>.lock`` under the repository root."""
    path = repo_root() / ".dvc" / "tmp" / f"medrestore-{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def git_commit(root: Path | None = None) -> tuple[str, bool]:
    """(commit sha, dirty flag) of the working tree the stage runs in, or ("unknown", False) outside git.

    The stage's working directory, not ``DVC_ROOT``: a queued experiment runs in its own copy
    of the repository (``.dvc/tmp/exps/...``) while ``DVC_ROOT`` names the parent repository.
    Dirty means that a tracked file other than what DVC itself rewrites during a repro differs from
    the commit (:func:`dirty_paths`).
    """
    sha, changed = git_state(root)
    return sha, bool(changed)


def git_state(root: Path | None = None) -> tuple[str, list[str]]:
    """(commit sha, :func:`dirty_paths`) of the working tree at ``root`` (default: the working
    directory), or ("unknown", []) outside git."""
    root = root or Path.cwd()
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        prefix = subprocess.run(["git", "rev-parse", "--show-prefix"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain=v1", "-z", "--untracked-files=no", "--", "."], cwd=root, capture_output=True,
            check=True
        ).stdout.decode(errors="replace")
    except (OSError, subprocess.CalledProcessError):
        return "unknown", []
    return sha, dirty_paths(status, prefix, dvc_outputs(Path(root)))


def dvc_outputs(root: Path) -> set[str]:
    """The output paths ``dvc.lock`` at ``root`` records (relative to it), an empty set without one."""
    import yaml

    try:
        lock = yaml.safe_load((Path(root) / "dvc.lock").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return set()
    stages = lock.get("stages") if isinstance(lock, dict) else None
    return {str(o["path"]) for st in (stages or {}).values() if isinstance(st, dict)
            for o in st.get("outs") or [] if isinstance(o, dict) and "path" in o}


def dirty_paths(porcelain: str, prefix: str = "", outputs: set[str] = frozenset()) -> list[str]:
    """The changed paths of ``git status --porcelain=v1 -z`` (relative to the repository root; ``prefix``
    is where the DVC project sits in it) that make a stage's commit a lie about its inputs: every one but
    ``dvc.lock`` and the DVC outputs git tracks (``outputs``: ``cache: false`` outs such as
    reports/report.md), which ``dvc repro`` itself rewrites or removes while it runs."""
    entries = porcelain.split("\0")
    out, i = [], 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        if "R" in entry[:2] or "C" in entry[:2]:
            i += 1  # a rename or copy: the next entry is its source path
        path = entry[3:]
        rel = path[len(prefix):] if prefix and path.startswith(prefix) else path
        if rel == "dvc.lock" or any(rel == o or rel.startswith(o.rstrip("/") + "/") for o in outputs):
            continue
        out.append(rel)
    return out


def repro_id() -> str:
    """One id per ``dvc repro`` (or ``dvc exp run``, a queued experiment included), shared by all the
    stages it runs; "" when the stage was not started by DVC or the process table cannot be read (not Linux).

    DVC starts each stage's command in a shell whose environment holds ``DVC_STAGE``; the DVC process
    itself has none. The id is a digest of the host, the process id and the start time of the nearest
    ancestor without ``DVC_STAGE``, so it never repeats; it goes only to MLflow, never into an output."""
    if not os.environ.get("DVC_STAGE"):
        return ""
    pid = os.getppid()
    for _ in range(16):
        if pid <= 1:
            return ""
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return ""
        if not any(e.startswith(b"DVC_STAGE=") for e in environ):
            start = fields[19]  # field 22 of proc(5): the start time in clock ticks after boot
            return hashlib.sha1(f"{socket.gethostname()}:{pid}:{start}".encode()).hexdigest()[:16]
        pid = int(fields[1])  # field 4: the parent's pid
    return ""


def flatten(params: Any, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(params, dict):
        for k, v in params.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        out[prefix.rstrip(".")] = str(params)[:6000]
    return out


class Tracker:
    """Thin wrapper over the active MLflow run that counts, rather than hides, failed calls.

    ``failures`` lists every call that was not logged. After the first failure (MLflow has
    already retried it) the later calls are counted without being tried: a dead server is not
    waited for again and again. With ``required`` the first failure raises instead.
    """

    def __init__(self, run_id: str | None, required: bool) -> None:
        self.run_id = run_id
        self.required = required
        self.failures: list[str] = []
        self.gave_up = run_id is None

    def _call(self, what: str, fn, *args, **kwargs) -> Any:
        """``fn(*args, **kwargs)``'s value, or None when the call was not logged (counted in ``failures``)."""
        if self.gave_up:
            self.failures.append(what if self.run_id is None else f"{what}: skipped, the tracking store failed before")
            return None
        for attempt in range(LOCKED_RETRIES):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # mlflow raises many types (MlflowException, requests errors, OSError)
                if "database is locked" in str(exc) and attempt + 1 < LOCKED_RETRIES:
                    time.sleep(0.5)
                    continue
                if self.required:
                    raise RuntimeError(
                        f"MLflow {what} failed at {tracking_uri()} ({exc}); tracking.required is true, so the stage "
                        "stops. Fix: check MLFLOW_TRACKING_URI / the tracking server, or set tracking.required: false."
                    ) from exc
                self.failures.append(f"{what}: {type(exc).__name__}: {str(exc)[:200]}")
                self.gave_up = True
                return None
        return None

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

    def call(self, what: str, fn, *args, **kwargs) -> Any:
        """Any MLflow call ``fn(*args, **kwargs)`` under the same rules as the others (counted, never
        lost silently); its value, or None when it was not logged."""
        return self._call(what, fn, *args, **kwargs)


def stage_tags(stage: str) -> dict[str, str]:
    sha, changed = git_state()
    tags = {
        "dvc_stage": stage,
        "git_commit": sha,
        "git_dirty": str(bool(changed)).lower(),
        "dvc_root": os.environ.get("DVC_ROOT", str(repo_root())),
        "dvc_exp_name": os.environ.get("DVC_EXP_NAME", ""),
        "dvc_exp_baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", ""),
        "dvc_repro_id": repro_id(),
        "pid": str(os.getpid()),
        "host": socket.gethostname(),
    }
    if changed:  # what makes it dirty, so that the flag can be judged
        tags["git_dirty_paths"] = " ".join(changed[:20]) + (
            f" (+{len(changed) - 20} more)" if len(changed) > 20 else ""
        )
    return tags


def end_abandoned_runs(stage: str, current: str | None = None) -> list[str]:
    """End as KILLED the RUNNING runs of ``stage`` whose process (tags ``pid`` and ``host``: this
    machine) is gone, i.e. a stage killed with ``kill -9``; returns their ids."""
    from mlflow import MlflowClient

    from medrestore.core.io import _pid_alive

    client = MlflowClient()
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return []
    ended = []
    for run in client.search_runs([exp.experiment_id],
                                  filter_string=f"tags.dvc_stage = '{stage}' and attributes.status = 'RUNNING'",
                                  max_results=100):
        tags = run.data.tags
        if run.info.run_id == current or tags.get("host") != socket.gethostname() or not tags.get("pid", "").isdigit():
            continue
        if not _pid_alive(int(tags["pid"])):
            client.set_terminated(run.info.run_id, status="KILLED")
            ended.append(run.info.run_id)
    return ended


@contextlib.contextmanager
def stage_run(stage: str | None, params: dict[str, Any], *, required: bool = False) -> Iterator[Tracker]:
    """Open one MLflow run for a stage execution (``stage`` defaults to ``DVC_STAGE``).

    On exit, a stderr line ``[medrestore] WARNING: MLflow: N call(s) of stage S were not logged``
    lists what is missing whenever anything is; with ``required`` any failure raises instead.
    """
    stage = stage or os.environ.get("DVC_STAGE") or Path(sys.argv[0]).stem
    configure_http()
    uri = tracking_uri()
    try:
        import mlflow

        mlflow.set_tracking_uri(uri)
        with store_lock(uri):
            if mlflow.get_experiment_by_name(EXPERIMENT) is None:
                try:
                    mlflow.create_experiment(EXPERIMENT, artifact_location=artifact_location(uri))
                except Exception as exc:  # another process (a parallel queued experiment) created it first
                    if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
                        raise
            mlflow.set_experiment(EXPERIMENT)
            run = mlflow.start_run(run_name=stage)
    except Exception as exc:
        if required:
            raise RuntimeError(
                f"MLflow is unreachable at {uri} ({exc}); tracking.required is true, so the stage stops. "
                "Fix: start the tracking server, unset MLFLOW_TRACKING_URI, or set tracking.required: false."
            ) from exc
        print(f"[medrestore] WARNING: MLflow unreachable at {uri} ({str(exc)[:300]}); this run is NOT tracked.",
              file=sys.stderr)
        tracker = Tracker(None, required)
        try:
            yield tracker
        finally:
            _report(stage, tracker)
        return
    tracker = Tracker(run.info.run_id, required)
    status = "FAILED"
    try:
        tracker.set_tags(stage_tags(stage))
        tracker.call("end_abandoned_runs", end_abandoned_runs, stage, run.info.run_id)
        tracker.log_params(params)
        yield tracker
        status = "FINISHED"
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or a signal the stage turns into one (pipeline.stage.execute)
        status = "KILLED"
        raise
    finally:
        # After a failure the run's end is tried once, without retries: the server may be back.
        with _env(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
                  MLFLOW_HTTP_REQUEST_TIMEOUT="5") if tracker.gave_up else contextlib.nullcontext():
            try:
                mlflow.end_run(status=status)
            except Exception as exc:  # noqa: BLE001 (any MLflow failure is counted, never raised)
                tracker.failures.append(f"end_run({status}): {type(exc).__name__}: {str(exc)[:200]}")
        _report(stage, tracker)


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _report(stage: str, tracker: Tracker) -> None:
    if tracker.failures:
        run = f"run {tracker.run_id}" if tracker.run_id else "no run"
        print(
            f"[medrestore] WARNING: MLflow: {len(tracker.failures)} call(s) of stage {stage} ({run}) were not logged "
            f"at {tracking_uri()}: " + "; ".join(tracker.failures[:5]) + ("; ..." if len(tracker.failures) > 5 else ""),
            file=sys.stderr,
        )


def file_md5(path: Path) -> str:
    """The md5 DVC records for a single file."""
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dir_md5(folder: Path) -> str:
    """The md5 DVC 3 records for a directory output (``<md5>.dir``): the md5 of the JSON list of
    ``{"md5": ..., "relpath": ...}`` of every file under it, sorted by relpath."""
    import json

    folder = Path(folder)
    entries = sorted(({"md5": file_md5(f),
                       "relpath": f.relative_to(folder).as_posix()} for f in folder.rglob("*") if f.is_file()),
                     key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def output_md5(path: Path) -> str:
    """What ``dvc.lock`` records for ``path``: :func:`file_md5` of a file, :func:`dir_md5` of a folder."""
    return dir_md5(path) if Path(path).is_dir() else file_md5(path)


def relative_path(path: Path, root: Path | None = None) -> str:
    """``path`` relative to ``root`` (default: the working directory, the stage's workspace) in POSIX form,
    as dvc.yaml names it; the path as given when it lies outside."""
    root = Path(root or Path.cwd()).resolve()
    full = Path(path).resolve()
    return full.relative_to(root).as_posix() if full.is_relative_to(root) else Path(path).as_posix()


def tag_outputs(tracker, paths: list[Path], root: Path | None = None) -> None:
    """Tag the stage's MLflow run with ``out_md5:<path>`` for each output (the md5 DVC records), so
    ``medrestore lineage`` finds the exact run that wrote a file. A folder is tagged with DVC's
    directory md5 (``<md5>.dir``) and each of its top-level files with its own md5. Paths that do
    not exist are left out."""
    if tracker is None:
        return
    tags = {}
    for p in map(Path, paths):
        if not p.exists():
            continue
        tags[f"out_md5:{relative_path(p, root)}"] = output_md5(p)
        if p.is_dir():
            for f in sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")):
                tags[f"out_md5:{relative_path(f, root)}"] = file_md5(f)
    if tags:
        tracker.set_tags(tags)


def log_datasets(tracker, paths: list[Path], context: str, root: Path | None = None) -> dict[str, str]:
    """Log each DVC-tracked input of the stage (a folder or a file) as an MLflow dataset input of its
    run, with ``context`` (``train``, ``test``...): named by its path in the repository, digest the md5
    DVC records for it (so a run's dataset is found in ``dvc.lock`` and the other way round), source
    its local path. Returns name -> digest of those that exist."""
    datasets = {relative_path(p, root): output_md5(Path(p)) for p in map(Path, paths) if p.exists()}
    if tracker is None or not datasets:
        return datasets
    import warnings

    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    for name, digest in datasets.items():
        with warnings.catch_warnings():
            # MLflow 3.17 registers its local-file source twice, then warns that a local path "can be
            # interpreted in multiple ways" (both are the same class)
            warnings.filterwarnings("ignore",
                                    message="The specified dataset source can be interpreted in multiple ways")
            source = resolve_dataset_source(str((Path(root or Path.cwd()) / name).resolve()))
        tracker.call("log_input", mlflow.log_input, MetaDataset(source, name=name, digest=digest), context=context)
    return datasets


def run_by_output(client, rel: str, md5: str, stage_prefix: str = "") -> Any:
    """The newest finished run of the experiment tagged ``out_md5:<rel>`` = ``md5`` (the run that wrote
    that very file) whose stage starts with ``stage_prefix``, else None."""
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id],
                              filter_string=f"tags.`out_md5:{rel}` = '{md5}' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=50)
    return next((r for r in runs if r.data.tags.get("dvc_stage", "").startswith(stage_prefix)), None)
