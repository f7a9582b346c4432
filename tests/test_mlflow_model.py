"""Trained models as real MLflow models (medrestore.serving.mlflow_model): a pyfunc with signature and input
example logged in the training run, the champion alias without duplicate versions, and
``medrestore restore --model models:/...@champion`` on a CHASE_DB1 photograph."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medrestore.core.io import InputError, read_image, write_png_atomic
from medrestore.models import build_model, save_model


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    return tmp_path


def _model(folder, seed):
    torch.manual_seed(seed)
    save_model(build_model("dncnn", depth=3, features=8), folder, name="dncnn", kwargs={"depth": 3, "features": 8})
    return folder


def _logged(folder, example, stage="train@t-dncnn"):
    import mlflow

    from medrestore.serving.mlflow_model import log_restoration_model
    from medrestore.tracking.runs import file_md5, stage_run

    with stage_run(stage, {"task": "t"}, required=True) as tracker:  # as the training stage logs it
        uri = tracker.call("log_model", log_restoration_model, folder, example)
        tracker.set_tags({"model_uri": uri, "model_md5": file_md5(folder / "model.safetensors")})
        run_id = tracker.run_id
    assert mlflow.get_run(run_id).data.tags["dvc_stage"] == stage
    return uri, run_id


def test_the_pyfunc_restores_a_numpy_image_like_the_pipeline(store, chase_image):
    import mlflow

    from medrestore.models import load_model
    from medrestore.serving.inference import restore_array
    from medrestore.serving.mlflow_model import register_champion
    from medrestore.tracking.runs import file_md5

    folder = _model(store / "m1", 0)
    photo = chase_image[300:428, 400:560]  # a real 128 x 160 window
    uri, run_id = _logged(folder, photo[:40, :40])
    run = mlflow.get_run(run_id)
    assert run.data.tags["model_uri"] == uri and run.data.tags["model_md5"] == file_md5(folder / "model.safetensors")
    info = mlflow.models.get_model_info(uri)
    spec = info.signature.inputs.to_dict()[0]["tensor-spec"]
    assert spec["dtype"] == "uint8" and list(spec["shape"]) == [-1, -1, 3]
    assert info.saved_input_example_info is not None
    version = register_champion("t", uri, file_md5(folder / "model.safetensors"), {"train_run_id": run_id})
    assert version == "medrestore-t/1"
    loaded = mlflow.pyfunc.load_model("models:/medrestore-t@champion")
    out = loaded.predict(photo)  # any size, not only the example's
    model, _ = load_model(folder)
    expected = np.clip(np.round(restore_array(model, photo.astype(np.float32) / 255.0, tile=512, overlap=32) * 255), 0,
                       255).astype(np.uint8)
    assert out.dtype == np.uint8 and out.shape == photo.shape and np.array_equal(out, expected)


def test_champion_moves_without_duplicate_versions(store, chase_image):
    from mlflow import MlflowClient

    from medrestore.serving.mlflow_model import register_champion
    from medrestore.tracking.runs import file_md5

    a, b = _model(store / "a", 0), _model(store / "b", 1)
    example = chase_image[300:340, 400:440]
    ua, _ = _logged(a, example)
    ub, _ = _logged(b, example)
    assert register_champion("t", ua, file_md5(a / "model.safetensors"), {}) == "medrestore-t/1"
    # same weights: no new version
    assert register_champion("t", ua, file_md5(a / "model.safetensors"), {}) == "medrestore-t/1"
    assert register_champion("t", ub, file_md5(b / "model.safetensors"), {}) == "medrestore-t/2"
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("medrestore-t", "champion").version) == "2"
    assert register_champion("t", ua, file_md5(a / "model.safetensors"), {}) == "medrestore-t/1"  # back to the first
    assert str(client.get_model_version_by_alias("medrestore-t", "champion").version) == "1"
    assert len(client.search_model_versions("name='medrestore-t'")) == 2


def test_restore_cli_takes_a_champion_uri(store, chase_image, capsys):
    from medrestore.cli import main
    from medrestore.serving.mlflow_model import register_champion
    from medrestore.tracking.runs import file_md5

    folder = _model(store / "m", 0)
    uri, _ = _logged(folder, chase_image[300:340, 400:440])
    register_champion("t", uri, file_md5(folder / "model.safetensors"), {})
    write_png_atomic(store / "in" / "photo.png", chase_image[200:328, 300:428])
    assert main(["restore", "--model", "models:/medrestore-t@champion", str(store / "in" / "photo.png"), "--out",
                 str(store / "a")]) == 0
    assert main(["restore", "--model", str(folder), str(store / "in" / "photo.png"), "--out", str(store / "b")]) == 0
    assert np.array_equal(read_image(store / "a" / "photo.png"), read_image(store / "b" / "photo.png"))
    assert main(["restore", "--model", "models:/medrestore-t@nobody", str(store / "in" / "photo.png"), "--out",
                 str(store / "c")]) == 2
    assert "models:/medrestore-t@nobody: not found in the MLflow store" in capsys.readouterr().err


def test_a_missing_model_is_an_input_error(store):
    from medrestore.serving.mlflow_model import model_folder

    with pytest.raises(InputError, match="Fix"):
        model_folder("models:/medrestore-none@champion")


def test_an_experiment_gets_its_own_alias_never_the_champion(monkeypatch):
    from medrestore.serving.mlflow_model import CHAMPION, alias_for_run

    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    assert alias_for_run() == CHAMPION == "champion"
    monkeypatch.setenv("DVC_EXP_NAME", "vprob-0.003")
    assert alias_for_run() == "exp-vprob-0-003"



@pytest.fixture(scope="module")
def empty_registry(tmp_path_factory):
    """An MLflow sqlite store with its tables made, once per module (making them takes seconds)."""
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("registry") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_registered_models()
    return db


@pytest.fixture()
def registry(tmp_path, monkeypatch, empty_registry):
    """A fresh copy of the empty store as this test's tracking store; a task's registered model whose
    ``champion`` points at a version (yesterday's champion)."""
    import shutil

    import mlflow
    from mlflow import MlflowClient

    shutil.copy(empty_registry, tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    # over one an earlier test set (model_folder sets it)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.chdir(tmp_path)
    client = MlflowClient()
    client.create_registered_model("medrestore-t")
    client.create_model_version("medrestore-t", str(_model(tmp_path / "old", 0)), tags={"model_md5": "old"})
    client.set_registered_model_alias("medrestore-t", "champion", "1")
    return tmp_path, client


def test_a_task_without_a_champion_loses_its_stale_alias_and_says_why(registry):
    from mlflow.exceptions import MlflowException

    from medrestore.serving.mlflow_model import reason_tag, register_champion, withdraw_champion
    from medrestore.tracking.runs import file_md5

    root, client = registry
    name = "medrestore-t"
    assert withdraw_champion("t", "no converged model beats the degraded input") == name
    model = client.get_registered_model(name)
    assert not model.aliases and model.tags["no_champion_reason"] == "no converged model beats the degraded input"
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias(name, "champion")  # models:/medrestore-t@champion serves nothing
    assert len(client.search_model_versions(f"name='{name}'")) == 1  # the versions stay, for the record
    assert withdraw_champion("unknown", "why") is None  # no registered model: nothing to withdraw
    # an experiment's alias is withdrawn on its own, leaving the published champion alone
    client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(name, "exp-a", "1")
    withdraw_champion("t", "why", alias="exp-a")
    model = client.get_registered_model(name)
    assert set(model.aliases) == {"champion"} and model.tags[reason_tag("exp-a")] == "why"
    # a champion set again clears the reason of its own alias
    folder = _model(root / "new", 1)
    assert register_champion("t", str(folder), file_md5(folder / "model.safetensors"), {}, alias="exp-a") == f"{name}/2"
    tags = client.get_registered_model(name).tags
    assert reason_tag("exp-a") not in tags and "no_champion_reason" in tags


def test_the_report_stage_withdraws_the_champion_of_a_task_without_one(registry):
    """register_best_models with a task that best_models left out (no converged model above its input:
    tests/test_report_policy.py builds that case from CHASE_DB1 images): nothing registered, the stale
    alias removed, the reason recorded."""
    import mlflow

    from medrestore.tracking.lineage import register_best_models

    root, client = registry
    mlflow.set_experiment("medrestore")  # in this store (an earlier test's experiment may still be the active one)
    with mlflow.start_run():
        assert register_best_models({}, root / "models", root=root, tasks=["t"]) == {}
    model = client.get_registered_model("medrestore-t")
    assert not model.aliases and model.tags["no_champion_reason"] == "no converged model beats the degraded input"


def test_restoring_with_a_registered_model_leaves_the_store_as_it_was(store, chase_image):
    import os

    from medrestore.cli import main
    from medrestore.serving.mlflow_model import register_champion
    from medrestore.tracking.runs import file_md5

    folder = _model(store / "m", 0)
    uri, _ = _logged(folder, chase_image[300:340, 400:440])
    register_champion("t", uri, file_md5(folder / "model.safetensors"), {})
    write_png_atomic(store / "in" / "photo.png", chase_image[200:328, 300:428])
    artifacts = [p for p in store.iterdir() if p.is_dir() and p.name.startswith(("mlruns", "mlartifacts"))]
    assert artifacts
    before = sorted(str(p) for a in artifacts for p in a.rglob("*"))
    for path in (p for a in artifacts for p in [a, *a.rglob("*")]):
        os.chmod(path, 0o555 if path.is_dir() else 0o444)  # a read-only store
    try:
        assert main(["restore", "--model", "models:/medrestore-t@champion", str(store / "in" / "photo.png"), "--out",
                     str(store / "a"),
                     "--no-progress"]) == 0
    finally:
        for path in (p for a in artifacts for p in [a, *a.rglob("*")]):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
    assert sorted(str(p) for a in artifacts for p in a.rglob("*")) == before  # no registered_model_meta written into it


def test_a_tracking_server_that_is_down_is_given_up_in_seconds(tmp_path, monkeypatch, chase_image, capsys):
    import os
    import socket
    import time

    from medrestore.cli import main

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.delenv(key, raising=False)
    write_png_atomic(tmp_path / "photo.png", chase_image[200:328, 300:428])
    start = time.monotonic()
    code = main(["restore", "--model", "models:/medrestore-t@champion", str(tmp_path / "photo.png"), "--out",
                 str(tmp_path / "out")])
    assert time.monotonic() - start < 15
    err = capsys.readouterr().err
    assert code == 2 and "cannot be reached" in err and "Fix:" in err
    assert not os.path.exists(tmp_path / "out")


# The served model in a Python that has only what its requirements install: argv[1] the model folder,
# argv[2] an image (.npy); writes the restored pixels to argv[3] and where medrestore came from to argv[4].
_SERVE = r"""
import importlib.util, sys
# installed here, not in the requirements
for other in ("dvc", "pyiqa", "pytorch_lightning", "sqlalchemy", "matplotlib"):
    assert importlib.util.find_spec(other) is None, f"the lean Python finds {other}"
import numpy as np
import mlflow.pyfunc

model = mlflow.pyfunc.load_model(sys.argv[1])
np.save(sys.argv[3], model.predict(np.load(sys.argv[2])))
import medrestore
open(sys.argv[4], "w").write(medrestore.__file__)
"""


def _lean_site(requirements: list[str], dest):
    """A folder that holds (as links into this environment) the distributions ``requirements`` install:
    their transitive closure, markers evaluated, as pip would resolve them here. With ``python -S`` and
    this folder alone on PYTHONPATH, a Python sees what a fresh environment made from the requirements
    would, and nothing else."""
    import importlib.metadata as md
    import sysconfig
    from pathlib import Path

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name as canon

    todo, seen, wanted = [(Requirement(r), "") for r in requirements], set(), set()
    while todo:
        req, parent_extra = todo.pop()  # req as asked by a distribution installed with extra parent_extra
        if req.marker is not None and not req.marker.evaluate({"extra": parent_extra}):
            continue
        wanted.add(canon(req.name))
        for extra in ["", *sorted(req.extras)]:
            if (canon(req.name), extra) not in seen:
                seen.add((canon(req.name), extra))
                todo += [(Requirement(r), extra) for r in (md.requires(req.name) or [])]
    site = Path(sysconfig.get_paths()["purelib"])
    dest.mkdir()
    found = set()
    for dist in md.distributions(path=[str(site)]):
        if canon(dist.metadata["Name"]) not in wanted:
            continue
        found.add(canon(dist.metadata["Name"]))
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] != ".." and not f.name.endswith(".pth")}:
            if (site / top).exists() and not (dest / top).exists():
                (dest / top).symlink_to(site / top)
    assert found == wanted, f"not installed here: {sorted(wanted - found)}"
    return dest


def test_the_served_model_is_lean_portable_and_restores_like_the_cli(store, chase_image):
    """The logged model asks for what restoring needs, names no path of this machine, and in a Python
    that has only its requirements gives the pixels of `medrestore restore`: with medrestore installed
    it imports that one, without it the copy logged with the model."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import mlflow
    import yaml

    from medrestore.cli import main
    from medrestore.serving.mlflow_model import CODE_ARTIFACT, SERVING_PACKAGES

    folder = _model(store / "m1", 0)
    uri, _ = _logged(folder, chase_image[300:340, 400:440])
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(store / "served")))
    mlmodel = (local / "MLmodel").read_text()
    for root in (str(store), str(Path.cwd()), str(Path(__file__).resolve().parents[1]), "/tmp",
                 os.path.expanduser("~")):
        assert root not in mlmodel, f"MLmodel names a local path under {root}:\n{mlmodel}"
    conf = yaml.safe_load(mlmodel)["flavors"]["python_function"]
    assert conf["model_code_path"] == "mlflow_pyfunc.py" and not conf.get("code")
    assert {k: v for k, v in conf["artifacts"].items()} == {"model_dir": {"path": "artifacts/m1"},
                                                            CODE_ARTIFACT: {"path": f"artifacts/{CODE_ARTIFACT}"}}
    names = [line.split("==")[0] for line in (local / "requirements.txt").read_text().split()]
    assert names == ["mlflow-skinny", "pandas", *SERVING_PACKAGES]
    assert not {"dvc", "mlflow", "pyiqa", "pytorch-lightning", "torchvision", "albumentations",
                "matplotlib"} & set(names)

    photo = chase_image[200:328, 300:456]  # a real 128 x 156 window
    write_png_atomic(store / "in" / "photo.png", photo)
    assert main(["restore", "--model", str(folder), str(store / "in" / "photo.png"), "--out", str(store / "cli"),
                 "--no-progress"]) == 0
    expected = read_image(store / "cli" / "photo.png")
    np.save(store / "photo.npy", photo)
    (store / "serve.py").write_text(_SERVE)
    lean = str(_lean_site((local / "requirements.txt").read_text().split(), store / "lean-site"))
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTHON"))} | {"OMP_NUM_THREADS": "1"}
    # python -S: no site-packages, so nothing but PYTHONPATH: medrestore's source and the requirements, or the
    # requirements alone
    for case, path in {"installed": f"{src}:{lean}", "copy": lean}.items():
        out, origin = store / f"{case}.npy", store / f"{case}.txt"
        proc = subprocess.run([sys.executable, "-S", str(store / "serve.py"), str(local), str(store / "photo.npy"),
                               str(out), str(origin)],
                              env=env | {"PYTHONPATH": path}, cwd=store, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{case}: {proc.stderr[-3000:]}"
        where = origin.read_text()
        if case == "installed":
            assert where.startswith(src)  # not the copy in the model
        else:
            assert where.startswith(str(local / "artifacts" / CODE_ARTIFACT / "medrestore"))
        got = np.load(out)
        assert got.dtype == np.uint8 and np.array_equal(got, expected), case
