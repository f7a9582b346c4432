"""CycleGAN training on crops of adjacent patches (``crop_patches``): on CHASE_DB1 photographs
patchified and degraded as the pipeline does (the ``enhance`` task: image-level, unpaired), the
crops are the image regions they cover, and the train stage trains on them end to end."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import prepare_chase
from medrestore.core.io import InputError, read_image
from medrestore.data.corrupt import corrupt_task
from medrestore.data.patches import patchify
from medrestore.training.data import UnpairedCrops, assemble_crop, crop_table

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("seeded_single_thread")

P, S = 32, 16
PATCH_ARGS = {
    "patch_size": P,
    "stride": S,
    "min_fov_fraction": 0.5,
    "val_fraction": 0.25,
    "test_fraction": 0.25,
    "region_grid": 2,
}
ENHANCE = {
    "level": "image",
    "unpaired": True,
    "train": {"kind": "cataract"},
    "test": {"cataract": {"kind": "cataract"}},
}
DENOISE = {"train": {"kind": "gaussian", "sigma": 25}, "test": {"s25": {"kind": "gaussian", "sigma": 25}}}


@pytest.fixture(scope="module")
def chase(tmp_path_factory, chase_dir):
    root = tmp_path_factory.mktemp("chase_crops")
    prepared = prepare_chase(root, chase_dir, 160)
    patchify(prepared, root / "prepared", root / "patches", seed=7, **PATCH_ARGS)
    corrupt_task(
        root / "patches", root / "enhance", task="enhance", spec=ENHANCE, seed=11, prepared_dir=root / "prepared"
    )
    return root


def test_crops_are_the_image_regions_they_cover(chase):
    meta = json.loads((chase / "patches" / "patches.json").read_text())
    prep = json.loads((chase / "prepared" / "manifest.json").read_text())
    images = {e["id"]: e for e in prep["images"]}
    index = np.load(chase / "patches" / "train_index.npy")
    clean, degraded = np.load(chase / "patches" / "train.npy"), np.load(chase / "enhance" / "train.npy")
    cells = crop_table(index, S, 3)
    c = P + 2 * S
    assert len(cells) > 20 and cells.shape[1:] == (3, 3)
    present = {tuple(r) for r in index.tolist()}
    whole = 0
    for cell in cells:
        u, y, x = index[cell[0, 0]]
        assert all(tuple(index[cell[i, j]]) == (u, y + i * S, x + j * S) for i in range(3) for j in range(3))
        unit = meta["units"]["train"][u]
        image = read_image(chase / "prepared" / images[unit["source_id"]]["image"], "RGB")
        assert np.array_equal(assemble_crop(clean, cell, S), image[y : y + c, x : x + c])
        # the degraded patches were cut from one degraded image: every patch agrees with the crop
        crop = assemble_crop(degraded, cell, S)
        assert all(
            np.array_equal(crop[i * S : i * S + P, j * S : j * S + P], degraded[cell[i, j]])
            for i in range(3)
            for j in range(3)
        )
        whole += 1
    # every crop whose 9 patches exist is listed (patches near the FOV's edge are missing)
    candidates = sum(
        all((u, y + i * S, x + j * S) in present for i in range(3) for j in range(3)) for u, y, x in present
    )
    assert whole == candidates and candidates < len(index)
    assert np.array_equal(crop_table(index[::-1], S, 3).shape, cells.shape)
    assert np.array_equal(crop_table(index, S, 1)[:, 0, 0], np.lexsort(index.T[::-1]))


def test_unpaired_crops_keep_each_domain_to_its_own_images(chase):
    from medrestore.training.engine import train_model  # noqa: F401  (the engine's import of the crops)

    index = np.load(chase / "patches" / "train_index.npy")
    domain = np.load(chase / "enhance" / "train_domain.npy")
    cells = crop_table(index, S, 3)
    flat = domain[cells.reshape(len(cells), -1)]
    assert np.all((flat == flat[:, :1]).all(1))  # a crop never mixes images of both domains
    clean, degraded = np.load(chase / "patches" / "train.npy"), np.load(chase / "enhance" / "train.npy")
    ds = UnpairedCrops(clean, degraded, cells[flat[:, 0] == 0], cells[flat[:, 0] == 1], S)
    x, y = ds[(0, 0)]
    assert tuple(x.shape) == tuple(y.shape) == (3, P + 2 * S, P + 2 * S)
    with pytest.raises(InputError, match="crop_patches"):
        UnpairedCrops(clean, degraded, cells[:0], cells, S)


def _stage_params(tmp_path, crop_patches=3):
    from medrestore.core.params import validate_params

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"]["profile"] = "quick"
    params["train"]["runs"]["enhance-cyclegan"] = {
        "task": "enhance",
        "model": "cyclegan",
        "overrides": {
            "max_steps": 4,
            "val_every": 2,
            "batch_size": 2,
            "crop_patches": crop_patches,
            "val_patches": 16,
            "model_kwargs": {"features": 8, "n_blocks": 1, "upsample": "resize", "residual": True, "norm": "none"},
            "disc_kwargs": {"features": 8},
        },
    }
    params["runtime"] = {"progress_bar": False, "ckpt_every": 0}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return dict(validate_params(params))  # the schema knows crop_patches


class _Tracker:
    def __getattr__(self, name):
        return lambda *a, **k: None


def test_train_stage_trains_the_cyclegan_on_crops_byte_identically(chase, tmp_path, monkeypatch):
    from medrestore.pipeline import train

    monkeypatch.chdir(tmp_path)
    shutil.copytree(chase / "patches", tmp_path / "artifacts/patches")
    shutil.copytree(chase / "enhance", tmp_path / "artifacts/corrupt/enhance")
    params = _stage_params(tmp_path)
    monkeypatch.setattr(train, "params", lambda: params)
    monkeypatch.setattr(train, "run", lambda name, p, all_p: contextlib.nullcontext(_Tracker()))
    out = tmp_path / "artifacts/models/enhance/cyclegan"
    outputs = []
    for _ in range(2):
        train.main(["enhance-cyclegan"])
        outputs.append(
            {f: (out / f).read_bytes() for f in ("model.safetensors", "metrics.json", "curve.csv", "model.json")}
        )
        shutil.rmtree(out)
    assert outputs[0] == outputs[1]
    metrics = json.loads(outputs[0]["metrics.json"])
    assert metrics["steps"] == 4 and metrics["model"] == "cyclegan"
    domain = np.load(chase / "enhance" / "train_domain.npy")
    cells = crop_table(np.load(chase / "patches" / "train_index.npy"), S, 3)
    flat = domain[cells[:, 0, 0]]
    assert metrics["train_crops"] == {
        "size": P + 2 * S,
        "clean": int((flat == 0).sum()),
        "degraded": int((flat == 1).sum()),
    }
    # with a patch-level corruption the crops would not be exact: refused, naming the run and the fix
    corrupt_task(chase / "patches", tmp_path / "denoise", task="denoise-x", spec=DENOISE, seed=3)
    shutil.rmtree(tmp_path / "artifacts/corrupt/enhance")
    shutil.copytree(tmp_path / "denoise", tmp_path / "artifacts/corrupt/enhance")
    with pytest.raises(InputError, match="crop_patches: 0"):
        train.main(["enhance-cyclegan"])


def test_paired_models_refuse_crop_patches(tmp_path):
    from medrestore.training.config import TrainConfig
    from medrestore.training.engine import train_model

    clean = np.zeros((8, 16, 16, 3), np.uint8)
    with pytest.raises(InputError, match="crop_patches"):
        train_model(
            TrainConfig(model="redae", crop_patches=3, max_steps=2, progress_bar=False),
            (clean, clean),
            (clean, clean),
            tmp_path / "m",
            tmp_path / "ck",
        )
