"""A trained restoration model as an MLflow model: a ``pyfunc`` that restores whole images tile by tile.

Every training stage logs its model in its own MLflow run (:func:`log_restoration_model`): the model
folder (``model.safetensors`` + ``model.json``) as the pyfunc's artifact, the pyfunc as code
(:mod:`medrestore.serving.mlflow_pyfunc`, MLflow's "models from code": nothing is pickled), a copy of
medrestore's source as a second artifact, a signature (an H x W x 3 uint8 image in, the restored uint8
image out, any size) and a real input example (a validation patch of the task).

The served model is lean: its requirements (:func:`requirements`) are what restoring imports
(:data:`SERVING_PACKAGES` at the project's pins, and ``mlflow-skinny`` with pandas for the pyfunc
loader and the scoring server), not the pipeline's packages (DVC, the MLflow server, pyiqa, Lightning, ...). Loading
imports the installed ``medrestore`` when there is one and the logged copy only otherwise; MLmodel names
files inside the model only, no path of the machine that logged it (:class:`_PortablePyfunc`).
So any MLflow tool can use it::

    mlflow.pyfunc.load_model("models:/medrestore-denoise-g25@champion").predict(image_uint8)
    mlflow models predict -m models:/medrestore-denoise-g25@champion -i image.json -t json
    medrestore restore --model models:/medrestore-denoise-g25@champion photo.png --out restored/

The report stage registers each task's best converged model (:func:`register_champion`): a new
version of ``medrestore-<task>`` only when no version holds weights with the same md5, then the
alias ``champion`` moves to it (inside a DVC experiment the alias ``exp-<name>`` instead:
:func:`alias_for_run`). A task with no converged model that beats its degraded input gets no
champion (:func:`withdraw_champion`): the alias is removed, so that a stale champion does not go on
serving, and the registered model's tag ``no_<alias>_reason`` says why. A registered model's
folder comes back with :func:`model_folder`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

#: The artifact key of the model folder inside the pyfunc.
ARTIFACT = "model_dir"
#: The name of the logged model in a training run.
LOGGED_NAME = "model"
#: The alias the report stage sets on each task's best converged model.
CHAMPION = "champion"
#: Tile and overlap of the pyfunc's restoration (input pixels): the evaluation's defaults.
TILE, OVERLAP = 512, 32


#: The artifact key of the copy of medrestore's source (the fallback when medrestore is not installed).
CODE_ARTIFACT = "medrestore_code"
#: The distributions restoring imports (:func:`medrestore.models.load_model`,
#: :func:`medrestore.serving.inference.restore_array` and the modules they import); tests/test_mlflow_model.py
#: checks this against the real import closure.
SERVING_PACKAGES = ("torch", "numpy", "safetensors", "scipy", "scikit-image", "pillow", "pyyaml")
#: The part of MLflow that loads and serves a pyfunc (the full ``mlflow`` adds the tracking server,
#: SQLAlchemy, matplotlib, scikit-learn, pyarrow, ...), and what its pyfunc module imports besides.
SERVING_MLFLOW, PYFUNC_PACKAGES = "mlflow-skinny", ("pandas",)


def _canonical(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def requirements() -> list[str]:
    """The served model's pip requirements: ``mlflow-skinny`` at the running MLflow's version,
    :data:`PYFUNC_PACKAGES` and :data:`SERVING_PACKAGES` at the pins medrestore declares (the installed version where it
    declares
    none, e.g. when medrestore runs from a source folder without being installed)."""
    import re
    from importlib.metadata import PackageNotFoundError, requires, version

    pins: dict[str, str] = {}
    try:
        for line in requires("medrestore") or []:
            if ";" not in line:  # extras (test, team) carry a marker
                pins[_canonical(re.split(r"[<>=!~\[ (]", line, maxsplit=1)[0])] = line.replace(" ", "")
    except PackageNotFoundError:
        pass
    import mlflow

    out = [f"{SERVING_MLFLOW}=={mlflow.__version__}"]
    for name in (*PYFUNC_PACKAGES, *SERVING_PACKAGES):
        out.append(pins.get(_canonical(name)) or f"{name}=={version(name).split('+')[0]}")  # no local label (+cu130)
    return out


class _PortablePyfunc:
    """``mlflow.pyfunc`` as the flavor of :meth:`mlflow.models.Model.log`, with an MLmodel that names
    files inside the model only: ``model_code_path`` by its name (MLflow loads it from the model folder
    by name anyway), no ``uri`` of the local folders the artifacts were copied from, and no
    ``artifact_path`` when it is a local folder of the tracking store (a remote store's URI stays)."""

    __name__ = "mlflow.pyfunc"

    @staticmethod
    def save_model(path, mlflow_model, **kwargs) -> None:
        import os
        from urllib.parse import urlparse

        import mlflow

        mlflow.pyfunc.save_model(path=path, mlflow_model=mlflow_model, **kwargs)
        conf = mlflow_model.flavors[mlflow.pyfunc.FLAVOR_NAME]
        if conf.get("model_code_path"):
            conf["model_code_path"] = os.path.basename(conf["model_code_path"])
        for artifact in (conf.get("artifacts") or {}).values():
            artifact.pop("uri", None)
        store = mlflow_model.artifact_path
        local = store is not None and urlparse(str(store)).scheme in ("", "file")
        if local:
            mlflow_model.artifact_path = None
        try:
            mlflow_model.save(os.path.join(path, "MLmodel"))
        finally:
            if local:
                mlflow_model.artifact_path = store  # MLflow's own bookkeeping of the logged model


def _source_copy(dest: Path) -> Path:
    """A copy of the running medrestore package under ``dest/medrestore`` (no bytecode)."""
    import shutil

    import medrestore

    shutil.copytree(Path(medrestore.__file__).parent, dest / "medrestore",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def signature():
    """Any H x W x 3 uint8 image in, the restored uint8 image out (``scale`` times larger for
    super-resolution); ``tile`` and ``overlap`` as parameters. (Inferred from the example, MLflow would
    fix the height and width to the example's.)"""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    image = Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, 3))])
    params = ParamSchema([ParamSpec("tile", "long", TILE), ParamSpec("overlap", "long", OVERLAP)])
    return ModelSignature(inputs=image, outputs=image, params=params)


def log_restoration_model(folder: Path, example: np.ndarray) -> str:
    """Log the model folder as a pyfunc named ``model`` in the active run; returns its model URI.

    ``example`` (uint8 H x W x 3, e.g. a degraded validation patch) is the input example (MLflow runs
    the model on it once to check that it loads and predicts); the signature is :func:`signature`."""
    import tempfile

    from mlflow.models import Model

    example = np.ascontiguousarray(example, dtype=np.uint8)
    if example.ndim != 3 or example.shape[2] != 3:
        raise ValueError(f"the input example must be an H x W x 3 uint8 image, got shape {example.shape}")
    with tempfile.TemporaryDirectory(prefix="medrestore-code-") as tmp:
        code = _source_copy(Path(tmp) / CODE_ARTIFACT)
        info = Model.log(
            artifact_path=None,  # deprecated in favour of name, still positional
            name=LOGGED_NAME,
            flavor=_PortablePyfunc,
            flavor_name="pyfunc.ModelFromCode",  # what mlflow.pyfunc.log_model records
            python_model=str(Path(__file__).with_name("mlflow_pyfunc.py")),  # models from code: no pickle
            artifacts={ARTIFACT: str(folder), CODE_ARTIFACT: str(code)},
            signature=signature(),
            input_example=example,
            pip_requirements=requirements(),
        )
    return info.model_uri


def alias_for_run() -> str:
    """The alias a report stage moves: ``champion`` in the repository's own workspace; inside a DVC
    experiment (``DVC_EXP_NAME`` set, e.g. a queued one) ``exp-<name>``, so that an experiment never
    replaces the published champion."""
    import os
    import re

    exp = os.environ.get("DVC_EXP_NAME", "")
    return f"exp-{re.sub(r'[^A-Za-z0-9_-]+', '-', exp)}" if exp else CHAMPION


def reason_tag(alias: str = CHAMPION) -> str:
    """The registered model's tag that says why ``alias`` points at no version."""
    return f"no_{alias}_reason"


def register_champion(task: str, model_uri: str, md5: str, tags: dict[str, str], alias: str = CHAMPION) -> str:
    """Register ``model_uri`` as a version of ``medrestore-<task>`` unless a version with weights of
    ``md5`` exists (then that one is reused), and point ``alias`` (default ``champion``) at it.
    Returns ``"name/version"``."""
    from mlflow import MlflowClient

    client = MlflowClient()
    name = f"medrestore-{task}"
    try:
        client.get_registered_model(name)
    except Exception:  # noqa: BLE001  MLflow raises its own error when the name is new
        client.create_registered_model(name,
                                       description=f"Best converged model of the {task} task (medrestore report "
                                                   f"stage); alias {CHAMPION}: the current best.")
    same = [v for v in client.search_model_versions(f"name='{name}'") if (v.tags or {}).get("model_md5") == md5]
    if same:
        version = max(same, key=lambda v: int(v.version))
    else:
        import mlflow

        # register_model resolves a logged model's URI (models:/m-...) to its source and model id
        version = mlflow.register_model(model_uri, name, tags={**tags, "model_md5": md5})
    client.set_registered_model_alias(name, alias, version.version)
    if reason_tag(alias) in (client.get_registered_model(name).tags or {}):
        client.delete_registered_model_tag(name, reason_tag(alias))
    return f"{name}/{version.version}"


def withdraw_champion(task: str, reason: str, alias: str = CHAMPION) -> str | None:
    """A task without a champion: remove ``alias`` from ``medrestore-<task>`` if it is set, and record
    ``reason`` in the registered model's tag :func:`reason_tag`. Returns the registered model's name,
    None when the task has none (no alias to remove)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    name = f"medrestore-{task}"
    try:
        model = client.get_registered_model(name)
    except Exception:  # noqa: BLE001  MLflow raises its own error when the name is unknown
        return None
    if alias in (model.aliases or {}):
        client.delete_registered_model_alias(name, alias)
    client.set_registered_model_tag(name, reason_tag(alias), reason)
    return name


def model_folder(uri: str, dest: Path | None = None) -> Path:
    """The model folder (model.safetensors + model.json) of an MLflow model URI (``models:/NAME@ALIAS``,
    ``models:/NAME/VERSION``, ``runs:/RUN/model``), downloaded from the tracking store.

    Always copied into ``dest`` (default: a temporary folder removed at exit), never read in place:
    MLflow writes a ``registered_model_meta`` file into the folder it returns, which for a local
    artifact store would be the store itself. HTTP retries are bounded as in the stages
    (:func:`medrestore.tracking.runs.configure_http`): a tracking server that is down is given up in seconds."""
    import atexit
    import shutil
    import tempfile

    import mlflow

    from medrestore.core.io import InputError
    from medrestore.tracking.runs import configure_http, tracking_uri

    configure_http()
    mlflow.set_tracking_uri(tracking_uri())
    if dest is None:
        dest = Path(tempfile.mkdtemp(prefix="medrestore-model-"))
        atexit.register(shutil.rmtree, dest, ignore_errors=True)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest)))
    except Exception as exc:  # noqa: BLE001  MLflow raises several types for a missing model
        text = f"{type(exc).__name__}: {exc}"
        if any(word in text for word in ("Max retries exceeded", "Connection refused", "ConnectionError", "timed out")):
            raise InputError(f"{uri}: the MLflow tracking server at {tracking_uri()} cannot be reached "
                             f"({' '.join(text.split())[:200]}). Fix: start it (`make mlflow-server`), or set "
                             "MLFLOW_TRACKING_URI to the store that has the model.") from None
        raise InputError(f"{uri}: not found in the MLflow store at {tracking_uri()} ({str(exc)[:200]}). Fix: check the "
                         "name and alias (`mlflow models` / the UI's Models page), or set MLFLOW_TRACKING_URI to the "
                         "store that has it.") from None
    found = sorted(p.parent for p in local.glob(f"artifacts/{ARTIFACT}/model.json")) or sorted(
        # not in the source copy
        p.parent for p in local.rglob("model.json") if CODE_ARTIFACT not in p.relative_to(local).parts)
    if not found:
        raise InputError(f"{uri}: the MLflow model holds no medrestore model folder (model.json). Fix: pass a model "
                         "logged by a medrestore training stage.")
    meta = json.loads((found[0] / "model.json").read_text())
    if "model" not in meta:
        raise InputError(f"{found[0] / 'model.json'}: names no model. Fix: pass a model logged by a medrestore "
                         "training stage.")
    return found[0]
