"""Shared fixtures: real images only (CHASE_DB1 from ../shared, scikit-image's fundus photograph)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CHASE = SHARED / "datasets" / "chase_db1"
ASSETS = SHARED / "assets" / "pyiqa"


@pytest.fixture(autouse=True)
def _tracking_uri_restored():
    """``mlflow.set_tracking_uri`` also sets ``MLFLOW_TRACKING_URI`` in ``os.environ`` (for subprocesses):
    a test that calls it, directly or through a stage run in-process, would point every later test's
    subprocesses at its store (a stopped server, a deleted folder). Restore both after each test."""
    import sys

    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if os.environ.get("MLFLOW_TRACKING_URI") != before and "mlflow" in sys.modules:
        import mlflow

        mlflow.set_tracking_uri(before)  # None: unset
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def subprocess_env() -> dict:
    """The environment of a test's DVC / git subprocesses: this one without MLflow's or DVC's own
    variables, this Python's folder first on PATH (the stages' `python`), a git identity."""
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    return env


def use_subprocess_env(monkeypatch) -> None:
    """Make :func:`subprocess_env` this process's environment for one test (for code under test that
    starts DVC itself)."""
    env = subprocess_env()
    for key in [k for k in os.environ if k not in env]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def copy_checkout(dest: Path) -> Path:
    """Copy the working tree as git sees it (tracked files and new files git does not ignore, as they
    are now) to ``dest``: what a clone of this state would hold, without caches, outputs or .git
    (the quick tour's copy, tools/quick_tour.py)."""
    from tools.quick_tour import copy_checkout as copy

    copy(dest)
    return dest


def cut_patches(region: np.ndarray, size: int, stride: int) -> np.ndarray:
    """Every ``size`` x ``size`` patch of ``region`` whose corner lies on the ``stride`` grid (row by row)."""
    h, w = region.shape[:2]
    return np.stack(
        [
            region[y : y + size, x : x + size]
            for y in range(0, h - size + 1, stride)
            for x in range(0, w - size + 1, stride)
        ]
    )


def noisy_copies(clean: np.ndarray, salt: int, sigma: float = 25) -> np.ndarray:
    """Gaussian-noise copies of the patches ``clean``, patch ``i`` seeded ``[salt, i]`` (the pipeline's corruption)."""
    from medrestore.degradations import corrupt

    return np.stack([corrupt(p, {"kind": "gaussian", "sigma": sigma}, [salt, i])[0] for i, p in enumerate(clean)])


def shrink_params(params: dict, *, datasets: Path | None = None, sources: list[str] = ("chase_db1",), size: int = 256,
                  patch: int = 32, stride: int = 16, tasks: set[str] | None = None) -> dict:
    """The repository's params.yaml made tiny for an end-to-end test: ``sources`` read from ``datasets``
    (default ../shared/datasets), ``size`` px images, ``patch`` px patches, only the corruption ``tasks``
    (default: those of the remaining train runs), no progress bars (runtime). Training budgets stay the caller's."""
    params["download"].update(sources=list(sources), mirror=str(datasets or SHARED / "datasets"))
    params["prepare"]["size"] = size
    params["patchify"].update(patch_size=patch, stride=stride)
    train = params["train"]
    if tasks is None:
        tasks = {r["task"] for r in [*train["runs"].values(), *(train.get("finetune") or {}).values()]}
    params["corrupt"]["tasks"] = {k: v for k, v in params["corrupt"]["tasks"].items() if k in tasks}
    if params.get("evaluate_external"):  # one evaluate_external stage per remaining denoising task
        params["evaluate_external"]["tasks"] = [t for t in params["evaluate_external"]["tasks"] if t in tasks]
    # vessel-aware runs whose plain twin was dropped go too (their base must be a train.runs entry)
    train["vessel"] = {
        k: v for k, v in (train.get("vessel") or {}).items() if v["base"] in train["runs"] and v["task"] in tasks
    }
    params.setdefault("runtime", {})["progress_bar"] = False
    return params


def _require(path: Path) -> Path:
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: CI must have ../shared beside the checkout")
        pytest.skip(f"{path} not present on this machine")
    return path


@pytest.fixture(scope="session")
def chase_dir() -> Path:
    return _require(CHASE)


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    return _require(ASSETS)


@pytest.fixture(scope="session")
def retina() -> np.ndarray:
    import skimage.data

    return skimage.data.retina()


@pytest.fixture(scope="session")
def chase_image(chase_dir) -> np.ndarray:
    from medrestore.core.io import read_image

    return read_image(chase_dir / "Image_01L.jpg")


@pytest.fixture
def seeded_single_thread():
    """One torch thread and a fixed seed: small-model tests run ~10x faster than with 2 contending threads."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def kill_and_resume(tmp_path, script_text: str, arrays: dict, settle: float) -> None:
    """Run a training script to the end (reference), run it again and ``kill -9`` it ``settle``
    seconds after its first checkpoint, rerun it: the resumed run must say so, end with outputs
    byte-identical to the reference and leave no resume checkpoint behind. The script takes
    ``DATA_DIR OUT_DIR`` and checkpoints under ``DATA_DIR/ckpt``."""
    import signal
    import sys
    import time

    for name, arr in arrays.items():
        np.save(tmp_path / name, arr)
    script = tmp_path / "train.py"
    script.write_text(script_text)
    reference = subprocess.run([sys.executable, str(script), str(tmp_path), str(tmp_path / "ref")], check=False,
                               capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr[-2000:]

    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), str(tmp_path / "out")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    ckpts: list = []
    while time.time() < deadline and proc.poll() is None:
        ckpts = [c for c in (tmp_path / "ckpt").glob("*/last.ckpt") if c.stat().st_size > 0]
        if ckpts:
            time.sleep(settle)  # let it train past the checkpoint, then kill mid-step
            break
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be killed; raise max_steps"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpts, "no checkpoint was written before the kill"
    assert not (tmp_path / "out" / "model.safetensors").exists()

    resumed = subprocess.run([sys.executable, str(script), str(tmp_path), str(tmp_path / "out")], check=False,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout
    for name in ("model.safetensors", "metrics.json", "curve.csv"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
    assert not list((tmp_path / "ckpt").glob("*/last.ckpt"))  # cleaned up once finished


def prepare_chase(root: Path, chase_dir: Path, size: int, keep=lambda recs: recs[:8]) -> dict:
    """CHASE_DB1 photographs (``keep`` of the gathered records, default the first 8: children 01-04)
    gathered from the shared mirror into ``root`` and prepared as the pipeline prepares them
    (border_centre, ``size`` px); returns the prepared manifest."""
    from medrestore.data.prepare import prepare_sources
    from medrestore.data.sources import gather

    recs = gather(["chase_db1"], root / "sources", mirror=chase_dir.parent, folder=root, cache_dir=root,
                  allow_network=False)
    manifest = {"images": [r.as_dict(root / "sources") for r in keep(recs)]}
    return prepare_sources(manifest, root / "sources", root / "prepared", size=size, mode="border_centre",
                           fov_threshold=0.1)

