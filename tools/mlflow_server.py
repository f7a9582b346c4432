"""The repository's local MLflow tracking server, for several processes logging at once
(``dvc queue start -j 2``): MLflow's recommendation for concurrent writers is one server that owns
the database, rather than many processes on one SQLite file.

    .venv/bin/python tools/mlflow_server.py start [--port 5000]   # make mlflow-server
    .venv/bin/python tools/mlflow_server.py status
    .venv/bin/python tools/mlflow_server.py stop                   # make mlflow-server-stop

``start`` serves the repository's ``mlflow.db`` on 127.0.0.1 (artifacts proxied into ``mlartifacts/``),
waits until it answers, and records ``{"uri", "pid"}`` in ``.mlflow/server.json``. Every stage finds
it there (:func:`medrestore.tracking.runs.tracking_uri`), queued experiments included: they run in copies
under ``.dvc/tmp/exps`` and read the record from ``DVC_ROOT``, the repository itself. With no server
running the stages log to ``mlflow.db`` directly, as before.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / ".mlflow" / "server.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def status(root: Path = REPO) -> dict | None:
    record = root / ".mlflow" / "server.json"
    try:
        info = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    return info if _alive(int(info.get("pid", -1))) else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(uri: str, proc: subprocess.Popen, timeout: float) -> bool:
    """True once the server at ``uri`` answers ``/health``; False when ``proc`` exits or ``timeout`` passes."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            time.sleep(0.5)
    return False


def start(root: Path = REPO, port: int | None = None, timeout: float = 90.0) -> dict:
    """Start the server for ``root`` (unless one runs) and return its record."""
    running = status(root)
    if running:
        return running
    port = port or free_port()
    uri = f"http://127.0.0.1:{port}"
    record = root / ".mlflow" / "server.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
           f"sqlite:///{(root / 'mlflow.db').as_posix()}",
           "--artifacts-destination", (root / "mlartifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    with open(record.parent / "server.log", "ab") as log:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    if not wait_until_up(uri, proc, timeout):
        if proc.poll() is not None:
            raise SystemExit(f"mlflow server exited ({proc.returncode}); see {record.parent / 'server.log'}")
        os.killpg(proc.pid, signal.SIGTERM)
        raise SystemExit(f"mlflow server did not answer at {uri} within {timeout:.0f} s; see "
                         f"{record.parent / 'server.log'}")
    info = {"uri": uri, "pid": proc.pid}
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, record)
    return info


def stop(root: Path = REPO) -> bool:
    """Stop the server of ``root``; False when none ran."""
    info = status(root)
    (root / ".mlflow" / "server.json").unlink(missing_ok=True)
    if not info:
        return False
    try:
        os.killpg(int(info["pid"]), signal.SIGTERM)
    except OSError:
        return False
    for _ in range(50):
        if not _alive(int(info["pid"])):
            break
        time.sleep(0.1)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("start", "stop", "status"))
    ap.add_argument("--port", type=int, default=None, help="default: a free port")
    args = ap.parse_args(argv)
    if args.action == "start":
        info = start(port=args.port)
        print(f"MLflow tracking server {info['uri']} (pid {info['pid']}); stages log there while it runs. Stop: make "
              "mlflow-server-stop")
    elif args.action == "stop":
        print("stopped" if stop() else "no server was running")
    else:
        info = status()
        print(f"running: {info['uri']} (pid {info['pid']})" if info else "not running")
        return 0 if info else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
