"""Team set-up: DVC remotes on a shared folder and on S3, and an MLflow server backed by PostgreSQL.

A tiny pipeline (one task, one training run) runs in a temporary git copy of the repository
against a real ``mlflow server`` whose backend store is a PostgreSQL cluster started here on
127.0.0.1 (Debian's ``postgresql`` package) and whose artifact store is an S3 bucket; the pipeline
is unchanged but for ``MLFLOW_TRACKING_URI``. Its outputs are pushed to two DVC remotes, a local
folder (standing for an NFS share) and an S3 bucket, and pulled from each into a fresh
``git clone``. The S3 store is moto's S3 server (``moto[s3]``, in ``requirements.lock``) on
127.0.0.1: the same HTTP API as AWS S3 or MinIO, reached through DVC's own ``dvc-s3`` and boto3.

Without PostgreSQL's binaries the pipeline logs to the default SQLite store and the PostgreSQL
test is skipped, except in CI (``CI`` set), where they must be installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import copy_checkout, shrink_params

REPO = Path(__file__).resolve().parents[1]
TASK, RUN, MODEL = "denoise-g25", "denoise-g25-cdae", "cdae"  # the cheapest model to train
TARGET = f"train@{RUN}"
STAGES = {"download", "prepare", "patchify", f"corrupt@{TASK}", TARGET}
pytestmark = pytest.mark.slow  # a pipeline run end to end

BUCKET = "medrestore-team"
S3_KEYS = {"AWS_ACCESS_KEY_ID": "medrestore-key", "AWS_SECRET_ACCESS_KEY": "medrestore-secret-0123",
           "AWS_DEFAULT_REGION": "us-east-1"}
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def run(cmd: list[str], cwd: Path, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}"
    return res


def dvc(*args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], cwd, env)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_params(params: dict, datasets: Path) -> dict:
    """CHASE_DB1 at 256 px, one corruption task and one short training run."""
    shrink_params(params, datasets=datasets, tasks={TASK})
    params["train"]["runs"] = {RUN: params["train"]["runs"][RUN]}
    params["train"]["chains"] = {}
    params["train"]["finetune"] = {}
    params["train"]["vessel"] = {}
    params["train"]["profile"] = "quick"
    params["train"]["profiles"]["quick"]["models"][MODEL].update(max_steps=20, val_every=10, ckpt_every=10)
    return params


# --------------------------------------------------------------------------- PostgreSQL + MLflow
def postgres_bin() -> Path | None:
    """PostgreSQL's server binaries (Debian keeps them off PATH, in /usr/lib/postgresql/<version>/bin)."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    return found[-1].parent if found else None


def wait_http(url: str, proc: subprocess.Popen, log: Path, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[:4]} exited ({proc.returncode}): " + log.read_text()[-3000:])
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer in {seconds} s: " + log.read_text()[-3000:])


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL cluster on 127.0.0.1 with a database ``mlflow``; None if not installed (outside CI).

    initdb refuses to run as root: as root, the cluster belongs to the ``postgres`` system user.
    """
    bindir = postgres_bin()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed: CI needs `apt-get install -y --no-install-recommends postgresql`")
        yield None
        return
    as_user: list[str] = []
    home = Path(tempfile.mkdtemp(prefix="medrestore-pg-"))  # not under pytest's root-only folder
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")  # created by Debian's package
        os.chown(home, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = home / "data", free_port()
    try:
        run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "medrestore", "--auth=trust", "-E", "UTF8",
             "--no-locale"], home)
        run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(home / "postgres.log"), "-w", "-t", "60",
             "-o", f"-p {port} -k {home} -c listen_addresses=127.0.0.1", "start"], home)
        try:
            run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "medrestore", "mlflow"], home)
            yield f"postgresql://medrestore@127.0.0.1:{port}/mlflow"
        finally:
            run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], home, check=False)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def serve(cmd: list[str], log: Path, env: dict, health: str):
    """Start a throwaway server in its own process group; return it once ``health`` answers 200."""
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, env=env,
                                cwd=log.parent)
    try:
        wait_http(health, proc, log)
    except BaseException:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # throwaway servers: a graceful stop takes ~10 s
    proc.wait()


@pytest.fixture(scope="module")
def s3_store(tmp_path_factory):
    """An S3-compatible object store on 127.0.0.1 with an empty bucket: (endpoint url, boto3 client)."""
    try:
        import boto3
        import dvc_s3  # noqa: F401  (DVC's S3 support)
        import moto.server  # noqa: F401
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc}: CI installs moto[s3] and dvc-s3 from requirements.lock")
        pytest.skip(f"S3 test needs moto[s3] and dvc-s3 ({exc})")
    d = tmp_path_factory.mktemp("s3")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = serve([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], d / "s3.log",
                 dict(os.environ), f"{url}/moto-api/")
    try:
        client = boto3.client("s3", endpoint_url=url, aws_access_key_id=S3_KEYS["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"],
                              region_name=S3_KEYS["AWS_DEFAULT_REGION"])
        client.create_bucket(Bucket=BUCKET)
        yield url, client
    finally:
        stop(proc)


def s3_keys(client, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix`` in the bucket: key -> bytes."""
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
    return out


@pytest.fixture(scope="module")
def tracking_server(postgres, s3_store, tmp_path_factory):
    """``mlflow server`` on the PostgreSQL store with its artifacts in the S3 bucket: its url, or None."""
    if postgres is None:
        yield None
        return
    d = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(S3_KEYS, MLFLOW_S3_ENDPOINT_URL=s3_store[0])  # only the server touches the artifact store
    url = f"http://127.0.0.1:{port}"
    proc = serve([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", postgres, "--artifacts-destination",
                  f"s3://{BUCKET}/mlflow",
                  "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], d / "server.log", env, f"{url}/health")
    try:
        yield url
    finally:
        stop(proc)


# --------------------------------------------------------------------------- the pipeline, pushed
@pytest.fixture(scope="module")
def team(tmp_path_factory, chase_dir, tracking_server, s3_store):
    """The tiny pipeline up to one training run, in a git copy, logged to the tracking server and pushed to both
    remotes."""
    root = tmp_path_factory.mktemp("team")
    work, remote = root / "work", root / "shared-remote"
    copy_checkout(work)
    (work / "dvc.lock").unlink(missing_ok=True)
    (work / "data").mkdir(exist_ok=True)
    (work / "data" / ".keep").touch()  # data.dvc: data/ holds one empty hidden file (DVC warns on an empty folder)
    params = tiny_params(yaml.safe_load((work / "params.yaml").read_text()), chase_dir.parent)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(GIT_ENV, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if tracking_server is not None:
        env["MLFLOW_TRACKING_URI"] = tracking_server  # the only change for a team's server
    run(["git", "init", "-q"], work, env)
    run(["git", "add", "-A"], work, env)
    run(["git", "commit", "-qm", "tiny pipeline"], work, env)
    repro = dvc("repro", TARGET, cwd=work, env=env)
    dvc("remote", "add", "-d", "shared", str(remote), cwd=work, env=env)
    dvc("remote", "add", "store", f"s3://{BUCKET}/dvc", cwd=work, env=env)
    dvc("remote", "modify", "store", "endpointurl", s3_store[0], cwd=work, env=env)
    # Credentials go to .dvc/config.local, which git ignores: they never travel with the repository.
    dvc("remote", "modify", "--local", "store", "access_key_id", S3_KEYS["AWS_ACCESS_KEY_ID"], cwd=work, env=env)
    dvc("remote", "modify", "--local", "store", "secret_access_key", S3_KEYS["AWS_SECRET_ACCESS_KEY"], cwd=work,
        env=env)
    run(["git", "add", "-A"], work, env)
    run(["git", "commit", "-qm", "lock and remotes"], work, env)
    push = {"shared": dvc("push", cwd=work, env=env), "store": dvc("push", "-r", "store", cwd=work, env=env)}
    return work, remote, env, repro, push


def test_pipeline_ran_and_logged_every_stage_without_warnings(team):
    _, _, _, repro, _ = team
    for stage in STAGES:
        assert f"Running stage '{stage}'" in repro.stdout, repro.stdout[-3000:]
    assert "WARNING: MLflow" not in repro.stderr and "NOT tracked" not in repro.stderr, repro.stderr[-3000:]


def test_remotes_hold_the_same_objects(team, s3_store):
    work, remote, _, _, push = team
    folder = {
        p.relative_to(remote).as_posix(): p.read_bytes() for p in (remote / "files" / "md5").rglob("*") if p.is_file()
    }
    assert folder, push["shared"].stdout
    bucket = {k.removeprefix("dvc/"): v for k, v in s3_keys(s3_store[1], "dvc/").items()}
    assert bucket == folder, push["store"].stdout
    # Every object is named by the md5 of its bytes (files/md5/ab/cdef...; a directory's listing ends in .dir).
    for key, data in bucket.items():
        assert key.removeprefix("files/md5/").replace("/",
                                                      "").removesuffix(".dir") == hashlib.md5(data).hexdigest(), key
    model = work / "artifacts" / "models" / TASK / MODEL / "model.safetensors"
    digest = md5(model)
    assert bucket[f"files/md5/{digest[:2]}/{digest[2:]}"] == model.read_bytes()


@pytest.mark.parametrize("remote_name", ["shared", "store"])
def test_clone_pulls_byte_identical_outputs_and_is_up_to_date(team, tmp_path, remote_name):
    work, _, env, _, _ = team
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(work), str(clone)], tmp_path, env)
    assert not (clone / "artifacts").exists()
    # remotes travel with git
    assert {"shared", "store"} <= set(dvc("remote", "list", cwd=clone, env=env).stdout.split())
    config = (clone / ".dvc" / "config").read_text()
    assert S3_KEYS["AWS_SECRET_ACCESS_KEY"] not in config and not (clone / ".dvc" / "config.local").exists()
    # A team member's credentials come from the usual AWS_* variables (or their own `dvc remote modify --local`).
    pull_env = {**env, **S3_KEYS} if remote_name == "store" else env
    # Only the stages that ran have a dvc.lock entry (a full `dvc repro` would make a plain `dvc pull` fetch
    # everything).
    dvc("pull", "-r", remote_name, "--with-deps", TARGET, cwd=clone, env=pull_env)
    produced = sorted(p.relative_to(work) for p in (work / "artifacts").rglob("*") if p.is_file())
    pulled = sorted(p.relative_to(clone) for p in (clone / "artifacts").rglob("*") if p.is_file())
    assert produced == pulled
    model = Path("artifacts/models") / TASK / MODEL
    assert {model / "model.safetensors", model / "model.json", model / "metrics.json"} <= set(pulled)
    for rel in produced:
        assert (work / rel).read_bytes() == (clone / rel).read_bytes(), rel
    # Nothing to rerun: every stage up to the training run matches its dvc.lock entry.
    status = dvc("status", "--with-deps", TARGET, cwd=clone, env=env)
    assert "Data and pipelines are up to date" in status.stdout, status.stdout
    dry = dvc("repro", "--dry", TARGET, cwd=clone, env=env)
    assert "Running stage" not in dry.stdout, dry.stdout


def test_runs_params_and_registered_model_live_in_postgresql(team, postgres, tracking_server, s3_store):
    if tracking_server is None:
        pytest.skip("PostgreSQL is not installed on this machine (Debian: apt-get install postgresql)")
    from mlflow import MlflowClient

    work, _, env, _, _ = team
    url = tracking_server
    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name("medrestore")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.dvc_stage != ''", max_results=100)
    by_stage = {r.data.tags["dvc_stage"]: r for r in runs}
    assert set(by_stage) == STAGES
    assert {r.info.status for r in runs} == {"FINISHED"}
    train = by_stage[TARGET]
    assert (
        train.data.params["model"] == MODEL
        and train.data.params["max_steps"] == "20"
        and train.data.params["task"] == TASK
    )
    assert train.data.metrics["best_val_psnr"] > 0
    model_file = work / "artifacts" / "models" / TASK / MODEL / "model.safetensors"
    assert train.data.tags[f"out_md5:{model_file.relative_to(work).as_posix()}"] == md5(model_file)

    # The same runs, read from PostgreSQL itself: the server's store is the database, not a file.
    import psycopg

    with psycopg.connect(postgres) as con, con.cursor() as cur:
        cur.execute("select t.value from runs r join tags t on t.run_uuid = r.run_uuid where t.key = 'dvc_stage'")
        assert {v for (v,) in cur.fetchall()} == STAGES
        cur.execute("select count(*) from params p join tags t on t.run_uuid = p.run_uuid where t.key = 'dvc_stage' "
                    "and t.value = %s", (TARGET,))
        assert cur.fetchone()[0] > 10

    # Lineage finds the training run on the server by the model's md5.
    out = run([sys.executable, "-m", "medrestore.cli", "lineage", str(model_file.relative_to(work)), "--json"], work,
              env)
    found = json.loads(out.stdout)["mlflow"]
    assert found["run_id"] == train.info.run_id and found["matched_by"] == "output md5 tag", found

    # The report stage's registration: a version of the training run's model (its files in the artifact
    # store), the version and its champion alias in PostgreSQL.
    script = (
        "from pathlib import Path\n"
        "from medrestore.tracking.runs import stage_run\n"
        "from medrestore.tracking.lineage import register_best_models\n"
        "with stage_run('report', {}, required=True) as t:\n"
        f"    best = {{'{TASK}': {{'model': '{MODEL}', 'metric': 'mean psnr', 'value': 1.0}}}}\n"
        "    done = register_best_models(best, Path('artifacts/models'))\n"
        "print(done)\n"
    )
    res = run([sys.executable, "-c", script], work, env)
    assert f"medrestore-{TASK}/1" in res.stdout, res.stdout + res.stderr[-3000:]
    (version,) = client.search_model_versions(f"name = 'medrestore-{TASK}'")
    assert version.tags["model_md5"] == md5(model_file) and version.tags["train_run_id"] == train.info.run_id
    # ... from the training run's logged pyfunc, whose files went to the S3 artifact store through the tracking server
    model_id = getattr(version, "model_id", None)
    stored = [v for k, v in s3_keys(s3_store[1], "mlflow/").items()
              if k.endswith("/model.safetensors") and (model_id in k.split("/") if model_id else "/models/" in k)]
    assert len(stored) == 1 and stored[0] == model_file.read_bytes()
    assert train.data.tags["model_md5"] == md5(model_file) and train.data.tags["model_uri"].startswith("models:/")
