"""Another camera: the external evaluation (recoloured CHASE_DB1 test images and scikit-image's fundus
photograph), its report table, the colour range a trained model records, and `medrestore restore`'s
warning on inputs far outside it."""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import prepare_chase
from medrestore.core.io import read_image, read_mask, write_png_atomic
from medrestore.data.patches import patchify
from medrestore.data.photometric import PROFILES, recolour
from medrestore.pipeline.evaluate_external import evaluate_external
from medrestore.report.external import external_section
from medrestore.serving.colour import (
    CHANNELS,
    allowed_range,
    colour_statistics,
    colour_warnings,
)
from medrestore.serving.restore import restore_files

PATCH_ARGS = {"patch_size": 32, "stride": 16, "min_fov_fraction": 0.8, "val_fraction": 0.25, "test_fraction": 0.25,
              "region_grid": 2}
PREPARE = {"size": 128, "mode": "border_centre", "fov_threshold": 0.1}
S25 = {"kind": "gaussian", "sigma": 25}


@pytest.fixture(scope="module")
def chase(tmp_path_factory, chase_dir):
    """8 CHASE_DB1 photographs at 128 px, patchified; a RED-AE for denoise-g25 trained for a few steps
    on their train patches (so its model.json holds their colour statistics)."""
    root = tmp_path_factory.mktemp("external")
    prepared = prepare_chase(root, chase_dir, 128)
    patchify(prepared, root / "prepared", root / "patches", seed=7, **PATCH_ARGS)
    from medrestore.training.config import TrainConfig
    from medrestore.training.engine import train_model

    clean = np.load(root / "patches" / "train.npy")
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
    cfg = TrainConfig.from_params({"model": "redae", "batch_size": 4, "max_steps": 4, "val_every": 4, "ckpt_every": 4,
                                   "progress_bar": False, "seed": 3})
    train_model(cfg, (clean, noisy), (clean[:8], noisy[:8]), root / "models" / "denoise-g25" / "redae", root / "ckpt")
    return root


def _run(chase, out):
    return evaluate_external("denoise-g25", chase / "patches", chase / "models" / "denoise-g25", out, spec=S25,
                             variant="s25",
                             baselines=["median"], seed=11, profiles=sorted(PROFILES), gamma_range=[0.8, 1.25],
                             sample=True,
                             prepare=PREPARE, tile=512, overlap=32)


def test_external_evaluation_writes_its_table_and_replays_byte_identical(chase, tmp_path):
    summary = _run(chase, tmp_path / "a")
    n_test = len(json.loads((chase / "patches" / "patches.json").read_text())["test"])
    lines = (tmp_path / "a" / "per_image.csv").read_text().splitlines()
    assert lines[0].startswith("task,method,kind,image_id,source,profile,sigma,psnr_fov")
    assert len(lines) == 1 + (n_test + 1) * 3  # degraded, redae, median per image
    assert set(summary["methods"]) == {"degraded", "redae", "median"}
    assert (
        summary["methods"]["degraded"]["recoloured"]["n"] == n_test
        and summary["methods"]["degraded"]["sample"]["n"] == 1
    )
    # sigma 25: about 20.2 dB before clipping
    assert 18 < summary["methods"]["degraded"]["all"]["psnr_fov"]["mean"] < 24
    assert (
        summary["methods"]["median"]["all"]["psnr_fov"]["mean"]
        > summary["methods"]["degraded"]["all"]["psnr_fov"]["mean"]
    )
    for img in summary["images"]:
        if img["source"] == "recoloured":
            want = [PROFILES[img["profile"]][c] for c in CHANNELS]
            assert np.allclose(img["fov_channel_means"], want, atol=1.5), img
    assert len({i["profile"] for i in summary["images"] if i["profile"]}) > 1  # profiles differ between images (seeded)
    _run(chase, tmp_path / "b")
    for name in ("per_image.csv", "summary.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    md, parts = external_section(tmp_path, ["a", "sr-x4"], {"a": {}})
    text = "\n".join(md)
    assert "## Another camera" in text and "| degraded | input |" in text and "| redae | model |" in text
    assert "PSNR FOV, recoloured (dB)" in text and "PSNR FOV, sample (dB)" in text and len(parts) == 2
    assert external_section(tmp_path / "none", ["a"], {}) == ([], [])


def test_model_colour_range_comes_from_the_training_targets(chase):
    meta = json.loads((chase / "models" / "denoise-g25" / "redae" / "model.json").read_text())["colour"]
    assert meta == colour_statistics(np.load(chase / "patches" / "train.npy"))
    assert meta["blue"]["p95"] < 30 and meta["green"]["mean"] < 90  # CHASE_DB1: nearly black blue, dark green
    lo, hi = allowed_range(meta["blue"])
    assert lo < meta["blue"]["p5"] and hi < 50


def test_restore_warns_on_a_recoloured_image_and_not_on_a_chase_image(chase, tmp_path):
    manifest = json.loads((chase / "patches" / "patches.json").read_text())
    entry = manifest["test"][0]
    image, fov = read_image(chase / "patches" / entry["image"]), read_mask(chase / "patches" / entry["fov"])
    other, _ = recolour(image, fov, PROFILES["neutral"])
    write_png_atomic(tmp_path / "in" / "chase.png", image)
    write_png_atomic(tmp_path / "in" / "other.png", other)
    logged = []
    written, errors = restore_files(str(chase / "models" / "denoise-g25" / "redae"),
                                    [str(tmp_path / "in" / "chase.png"), str(tmp_path / "in" / "other.png")],
                                    tmp_path / "out", progress=False, log=logged.append, device="cpu")
    assert len(written) == 2 and not errors
    warnings = [line for line in logged if line.startswith("warning:")]
    assert len(warnings) == 1 and "other.png" in warnings[0] and "chase.png" not in warnings[0], logged
    blue = warnings[0]
    assert "blue channel mean 44.9" in blue or "blue channel mean 45.0" in blue
    assert "may be unreliable" in blue and "training range" in blue
    assert colour_warnings(image, fov, None, "x") == []  # a model without a colour record: no check


def test_the_stage_runs_on_the_pipeline_paths_and_refuses_a_task_it_does_not_list(chase, tmp_path, monkeypatch):
    import contextlib
    import shutil

    from medrestore.core.io import InputError, load_params
    from medrestore.pipeline import evaluate_external as stage

    params = load_params(path=Path(__file__).resolve().parents[1] / "params.yaml")
    params["prepare"] = PREPARE
    params["evaluate"]["baselines"]["denoise-g25"] = ["median"]
    shutil.copytree(chase / "patches", tmp_path / "artifacts" / "patches")
    shutil.copytree(chase / "models" / "denoise-g25", tmp_path / "artifacts" / "models" / "denoise-g25")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(stage, "params", lambda: params)
    monkeypatch.setattr(stage, "run", lambda name, p, all_p: contextlib.nullcontext(None))
    stage.main(["denoise-g25"])
    summary = json.loads((tmp_path / "artifacts" / "evaluate_external" / "denoise-g25" / "summary.json").read_text())
    assert summary["variant"] == "s25" and set(summary["methods"]) == {"degraded", "median", "redae"}
    with pytest.raises(InputError, match=r"evaluate_external.tasks. Fix"):
        stage.main(["sr-x4"])


def test_the_report_prints_the_another_camera_table_when_the_stage_ran(chase, tmp_path, retina):
    from test_report_build import _workspace

    from medrestore.report.build import build_report

    params = _workspace(tmp_path, retina)
    _run(chase, tmp_path / "external" / "t")
    build_report(params, ["t"], tmp_path / "eval", tmp_path / "patches", tmp_path / "models", tmp_path / "out",
                 lock_path=tmp_path / "dvc.lock", external_root=tmp_path / "external")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Another camera" in md and "| degraded | input |" in md and "| median | baseline |" in md
    assert "<h2 id='another-camera'>" in (tmp_path / "out" / "index.html").read_text()


def test_params_refuse_an_external_task_without_its_variant_or_models():
    from medrestore.core.io import InputError, load_params
    from medrestore.core.params import validate_params

    params = load_params(path=Path(__file__).resolve().parents[1] / "params.yaml")
    validate_params(params)
    params["evaluate_external"]["tasks"] = ["denoise-g25", "sr-x4"]
    with pytest.raises(InputError, match=r"evaluate_external.tasks lists 'sr-x4'.*Fix"):
        validate_params(params)
