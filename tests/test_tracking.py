import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medrestore.tracking.runs import HTTP_DEFAULTS, flatten, stage_run, tracking_uri


def test_default_store_is_sqlite_at_dvc_root(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert tracking_uri() == f"sqlite:///{tmp_path.as_posix()}/mlflow.db"


def test_stage_run_is_tagged_with_stage_commit_and_params(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("DVC_EXP_NAME", "exp-1")
    with stage_run("train@x", {"lr": 0.001, "model": {"depth": 17}}) as tracker:
        tracker.log_metrics({"loss": 0.5}, step=3)
    assert not tracker.failures
    con = sqlite3.connect(tmp_path / "mlflow.db")
    tags = dict(con.execute("select key, value from tags"))
    assert tags["dvc_stage"] == "train@x" and tags["dvc_exp_name"] == "exp-1"
    assert len(tags["git_commit"]) == 40 or tags["git_commit"] == "unknown"
    params = dict(con.execute("select key, value from params"))
    assert params == {"lr": "0.001", "model.depth": "17"}
    assert con.execute("select value, step from metrics where key='loss'").fetchall() == [(0.5, 3)]


def test_unreachable_server_is_reported_not_silent(monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with stage_run("evaluate@x", {}) as tracker:
        tracker.log_metrics({"psnr": 30.0})
    assert tracker.run_id is None and tracker.failures
    assert "NOT tracked" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="MLflow is unreachable"):
        with stage_run("evaluate@x", {}, required=True):
            pass


def test_flatten_nested_params():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": "x"}) == {"a.b": "1", "a.c": "[1, 2]", "d": "x"}


# --------------------------------------------------------------------------- faults, for real
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _client_env(uri: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}  # the defaults of tracking/runs.py apply
    env["MLFLOW_TRACKING_URI"] = uri
    return env


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` on 127.0.0.1 (its own process group, so that it can be killed whole)."""
    d = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    log = open(d / "server.log", "wb")  # noqa: SIM115 (open for the server's whole life)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{d}/server.db",
         "--default-artifact-root", str(d / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=_client_env(""),
    )
    url = f"http://127.0.0.1:{port}"
    from tools.mlflow_server import wait_until_up

    if not wait_until_up(url, proc, 180):
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("mlflow server did not start: " + (d / "server.log").read_text()[-2000:])
    yield url, proc, d / "server.db"
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    log.close()


CLIENT = """
import sys, time, pathlib
from medrestore.tracking.runs import stage_run
d, required = pathlib.Path(sys.argv[1]), sys.argv[2] == "1"
with stage_run(f"evaluate@fault{int(required)}", {"required": required}, required=required) as t:
    t.log_metrics({"before_kill": 1.0})
    (d / f"logged-{int(required)}").touch()
    while not (d / "go").exists():
        time.sleep(0.05)
    start = time.time()
    for i in range(20):
        t.log_metrics({"after_kill": float(i)}, step=i)
    print(f"LOGGING_AFTER_KILL_S {time.time() - start:.1f}", flush=True)
print("STAGE DONE")
"""


def _start_clients(tmp_path: Path, uri: str) -> dict[int, subprocess.Popen]:
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    return {
        req: subprocess.Popen([sys.executable, str(script), str(tmp_path), str(req)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=_client_env(uri))
        for req in (0, 1)
    }


def _check_outcomes(procs: dict[int, subprocess.Popen], expected_not_logged: int) -> None:
    start = time.time()
    try:
        out = {req: p.communicate(timeout=120) for req, p in procs.items()}  # MLflow's defaults take minutes
    except subprocess.TimeoutExpired:
        for p in procs.values():
            p.kill()
        pytest.fail("a dead tracking server made the stage hang (MLflow's retry/backoff not bounded)")
    assert time.time() - start < 60, "a dead tracking server made the stage wait"
    # tracking.required false: the stage completes and says how many calls were not logged.
    stdout, stderr = out[0]
    assert procs[0].returncode == 0, stderr[-3000:]
    assert "STAGE DONE" in stdout
    assert f"[medrestore] WARNING: MLflow: {expected_not_logged} call(s) of stage evaluate@fault0" in stderr, stderr[
        -3000:
    ]
    assert "log_metrics" in stderr
    # tracking.required true: the stage stops with an error that says why and what to do.
    stdout, stderr = out[1]
    assert procs[1].returncode != 0 and "STAGE DONE" not in stdout
    assert "tracking.required is true, so the stage stops" in stderr and "Fix:" in stderr, stderr[-3000:]


def test_server_killed_mid_run_is_reported_or_fails_without_hanging(tmp_path, mlflow_server):
    url, server, server_db = mlflow_server
    procs = _start_clients(tmp_path, url)
    deadline = time.time() + 120
    while not all((tmp_path / f"logged-{r}").exists() for r in (0, 1)):
        assert time.time() < deadline and all(p.poll() is None for p in procs.values()), [
            p.communicate() for p in procs.values()
        ]
        time.sleep(0.1)
    # Both runs are open on the server and logged their first metric: kill the server, all of it.
    con = sqlite3.connect(server_db)
    logged = {name for (name,
                        ) in con.execute("select r.name from runs r join metrics m on m.run_uuid = r.run_uuid where "
                                         "m.key = 'before_kill'")}
    con.close()
    assert logged == {"evaluate@fault0", "evaluate@fault1"}
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()
    (tmp_path / "go").touch()
    # 20 metric calls and the run's end were not logged: counted, none silently dropped.
    _check_outcomes(procs, expected_not_logged=21)


def test_server_down_from_the_start_is_reported_or_fails_without_hanging(tmp_path):
    (tmp_path / "go").touch()
    procs = _start_clients(tmp_path, f"http://127.0.0.1:{_free_port()}")
    _check_outcomes(procs, expected_not_logged=21)  # 1 + 20 metric calls of a run that never started
    assert HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"


WRITER = """
import sys, time, pathlib
import mlflow
from medrestore.tracking.runs import stage_run
d, i = pathlib.Path(sys.argv[1]), int(sys.argv[2])
(d / f"ready-{i}").touch()
while not (d / "go").exists():
    time.sleep(0.01)
with stage_run(f"train@writer{i}", {"writer": i}) as t:
    for step in range(10):
        t.log_metrics({"loss": i + step / 100}, step=step)
assert not t.failures, t.failures
"""


def test_concurrent_writers_to_one_fresh_sqlite_store_all_land(tmp_path):
    """Four processes open runs in a database that does not exist yet, at the same moment."""
    n = 4
    (tmp_path / "writer.py").write_text(WRITER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["DVC_ROOT"] = str(tmp_path)
    procs = [subprocess.Popen([sys.executable, str(tmp_path / "writer.py"), str(tmp_path), str(i)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(n)]
    deadline = time.time() + 120
    while len(list(tmp_path.glob("ready-*"))) < n:
        assert time.time() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.05)
    (tmp_path / "go").touch()  # all imported: they create the store together
    for p in procs:
        try:
            _, err = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, err[-3000:]
        assert "WARNING" not in err, err[-3000:]
    con = sqlite3.connect(tmp_path / "mlflow.db")
    runs = dict(con.execute("select name, status from runs"))
    assert runs == {f"train@writer{i}": "FINISHED" for i in range(n)}
    per_run = dict(con.execute("select r.name, count(*) from metrics m join runs r on r.run_uuid = m.run_uuid group "
                               "by r.name"))
    assert per_run == {f"train@writer{i}": 10 for i in range(n)}


def test_a_run_left_running_by_a_killed_stage_is_ended_at_the_next_start(tmp_path, monkeypatch):
    import socket
    import subprocess
    import sys

    from mlflow import MlflowClient

    from medrestore.tracking.runs import EXPERIMENT, stage_run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    with stage_run("prepare", {}):
        pass
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    client = MlflowClient()
    exp = client.get_experiment_by_name(EXPERIMENT).experiment_id
    host = socket.gethostname()
    # kill -9 left it
    killed = client.create_run(exp, tags={"dvc_stage": "prepare", "pid": str(dead), "host": host}).info.run_id
    alive = client.create_run(exp, tags={"dvc_stage": "prepare", "pid": str(os.getpid()), "host": host}).info.run_id
    other = client.create_run(exp, tags={"dvc_stage": "patchify", "pid": str(dead), "host": host}).info.run_id
    assert client.get_run(killed).info.status == "RUNNING"
    with stage_run("prepare", {}) as tracker:
        assert tracker.failures == []
    assert client.get_run(killed).info.status == "KILLED"
    assert client.get_run(alive).info.status == "RUNNING" and client.get_run(other).info.status == "RUNNING"
