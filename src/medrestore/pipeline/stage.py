"""What every stage shares: its params, its command-line argument and its MLflow run."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from medrestore.core.io import InputError, load_params
from medrestore.core.params import validate_params
from medrestore.tracking.runs import Tracker, stage_run

#: Said after every params error of a stage: DVC has removed the stage's outputs before running it.
CHECKOUT_FIX = ("DVC removed this stage's previous outputs before running it: after fixing params.yaml, `dvc checkout` "
                "brings them back (or `dvc repro` rebuilds them). `medrestore check-params` checks params.yaml without "
                "touching any output (`make repro` runs it first).")


def params() -> dict:
    """params.yaml, checked against its schema (:mod:`medrestore.core.params`) before the stage reads it."""
    try:
        return dict(validate_params(load_params()))
    except InputError as exc:
        raise InputError(f"{exc}\n  {CHECKOUT_FIX}") from None


def run(name: str, section_params: dict[str, Any], all_params: dict | None = None) -> AbstractContextManager[Tracker]:
    """The stage's MLflow run, named after ``DVC_STAGE`` when DVC runs it."""
    p = params() if all_params is None else all_params
    return stage_run(os.environ.get("DVC_STAGE", name), section_params,
                     required=bool(p.get("tracking", {}).get("required", False)))


def arg(argv: list[str] | None, i: int, usage: str = "KEY") -> str:
    """The ``i``-th argument (0-based, after the script) or a usage error."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) <= i:
        raise SystemExit(f"usage: {os.path.basename(sys.argv[0])} {usage}")
    return argv[i]


def _took(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


def execute(main: Callable[[list[str]], None]) -> None:
    """Run a stage's ``main`` on the command line, ending with one ``[medrestore] STAGE: done in T`` line
    (off a terminal, without MLflow's download bars): bad input (:class:`InputError`) ends it with the
    message and exit status 2, without a traceback; anything else is a bug and keeps its traceback.

    SIGTERM and SIGHUP (a stage stopped by hand, a closed terminal) are handled as Ctrl-C: the
    temporary outputs are removed, the MLflow run is ended as KILLED, and the exit status is 128 + the
    signal's number."""
    import signal

    def stop(signum, _frame):
        raise KeyboardInterrupt(signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    # a log: MLflow's artifact download bars are carriage-return animations, one line each there
    if not sys.stderr.isatty():
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    start = time.monotonic()
    try:
        main(sys.argv[1:])
        stage = os.environ.get("DVC_STAGE") or " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]])
        print(f"[medrestore] {stage}: done in {_took(time.monotonic() - start)}", flush=True)
    except InputError as exc:
        print(f"[medrestore] ERROR: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt as exc:
        signum = exc.args[0] if exc.args and isinstance(exc.args[0], int) else signal.SIGINT
        print(f"[medrestore] stopped by {signal.Signals(signum).name}: no half-written output is left (under `dvc "
              "repro` the previous outputs were removed when the stage started: `dvc checkout` brings them back); its "
              "MLflow run is ended as KILLED. Run it again with `dvc repro`.", file=sys.stderr)
        raise SystemExit(128 + signum) from None
