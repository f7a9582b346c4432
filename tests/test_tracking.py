import sqlite3

import pytest

from medrestore.tracking import flatten, stage_run, tracking_uri


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
