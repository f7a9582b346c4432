"""Lineage of a file inside a DVC directory output, in a real DVC repository: a tampered file is caught
by the directory's manifest (the .dir entry of the cache), as `dvc status` catches it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from medrestore.tracking.lineage import format_lineage, lineage

WRITE = (
    "import pathlib, shutil; out = pathlib.Path('out'); out.mkdir(exist_ok=True); "
    "shutil.copy('src.jpg', out / 'Image_11L.jpg'); (out / 'manifest.json').write_text('{}')"
)


@pytest.fixture()
def repo(tmp_path, chase_dir):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))},
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}

    def run(*cmd):
        return subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True, text=True)

    (tmp_path / "src.jpg").write_bytes((chase_dir / "Image_01L.jpg").read_bytes())
    run("git", "init", "-q")
    run(sys.executable, "-m", "dvc", "init", "-q")
    run(sys.executable, "-m", "dvc", "stage", "add", "-q", "-n", "make", "-d", "src.jpg", "-o", "out",
        f'{sys.executable} -c "{WRITE}"')
    run(sys.executable, "-m", "dvc", "repro", "-q")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "run")
    return tmp_path, run


def test_a_file_of_a_directory_output_matches_its_manifest(repo):
    root, _ = repo
    rec = lineage(root / "out" / "Image_11L.jpg", root=root, uri="sqlite:///" + str(root / "none.db"))
    assert rec["stage"] == "make" and rec["stage_output"] == "out"
    assert rec["matches_lock"] is True and rec["lock_md5"] == rec["md5"]


def test_one_flipped_byte_inside_a_directory_output_is_reported(repo):
    root, run = repo
    f = root / "out" / "Image_11L.jpg"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    rec = lineage(f, root=root, uri="sqlite:///" + str(root / "none.db"))
    assert rec["matches_lock"] is False and rec["lock_md5"] != rec["md5"]
    assert "WARNING" in format_lineage(rec) and "dvc checkout" in format_lineage(rec)
    status = run(sys.executable, "-m", "dvc", "status", "make").stdout
    assert "modified" in status  # DVC agrees


def test_without_the_manifest_in_the_cache_the_verdict_is_unknown_and_said(repo):
    root, _ = repo
    for p in sorted((root / ".dvc" / "cache").rglob("*.dir")):
        p.unlink()
    rec = lineage(root / "out" / "Image_11L.jpg", root=root, uri="sqlite:///" + str(root / "none.db"))
    assert rec["matches_lock"] is None and "dvc pull" in rec["lock_note"]
    assert "NOTE" in format_lineage(rec)


def test_the_lineage_command_exits_1_on_a_tampered_file(repo, monkeypatch, capsys):
    from medrestore.cli import main as cli

    root, _ = repo
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///" + str(root / "none.db"))
    assert cli(["lineage", "out/Image_11L.jpg"]) == 0
    f = root / "out" / "Image_11L.jpg"
    f.write_bytes(f.read_bytes()[:-1] + bytes([f.read_bytes()[-1] ^ 1]))
    assert cli(["lineage", "out/Image_11L.jpg"]) == 1
    assert "WARNING" in capsys.readouterr().out


def test_a_corrupt_dvc_lock_is_a_clear_error(repo, monkeypatch, capsys):
    from medrestore.cli import main

    root, _ = repo
    (root / "dvc.lock").write_text("schema: '2.0'\nstages:\n  make: [unclosed\n")
    monkeypatch.chdir(root)
    assert main(["lineage", "out/Image_11L.jpg"]) == 2
    err = capsys.readouterr().err
    assert "dvc.lock: not valid YAML" in err and "git checkout dvc.lock" in err


def test_a_tracking_server_that_is_down_is_given_up_in_seconds(repo, monkeypatch):
    import socket
    import time

    root, _ = repo
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.delenv(key, raising=False)
    start = time.monotonic()
    rec = lineage(root / "out" / "Image_11L.jpg", root=root, uri=f"http://127.0.0.1:{port}")
    assert time.monotonic() - start < 15
    assert rec["stage"] == "make" and "error" in rec["mlflow"]
