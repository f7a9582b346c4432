"""Additions are one file each: a network dropped into src/medrestore/models/ is listed by
``medrestore models``, trains through the training entry and is a code dependency of the train
stages; a metric registered in a module of its own is computed by the evaluation, summarised,
paired-tested, shown in the report's tables and ``metrics.json`` and printed by ``medrestore metrics``."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

TOY_NETWORK = '''"""A toy denoiser: one 3x3 convolution added to its input."""

import torch
from torch import nn

from medrestore.models.registry import register_model


class ToyNet(nn.Module):
    def __init__(self, channels: int = 3, features: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, features, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(features, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


register_model("toynet", ToyNet, "denoise", "a toy network of the registry test")
'''

TRAIN_SCRIPT = """
import contextlib, io, json, sys
import numpy as np
import skimage.data
from pathlib import Path
from medrestore.cli import main
from medrestore.degradations import corrupt
from medrestore.models import load_model
from medrestore.training.config import TrainConfig
from medrestore.training.engine import train_model

out = io.StringIO()
with contextlib.redirect_stdout(out):
    main(["models", "--json"])
listed = {r["name"]: r for r in json.loads(out.getvalue())}

region = skimage.data.retina()[500:644, 300:588]
clean = np.stack([region[y:y + 24, x:x + 24] for y in range(0, 121, 12) for x in range(0, 265, 24)])
noisy = np.stack([corrupt(p, {"kind": "gaussian", "sigma": 25}, [0, i])[0] for i, p in enumerate(clean)])
work = Path(sys.argv[1])
cfg = TrainConfig(model="toynet", max_steps=40, val_every=20, ckpt_every=20, batch_size=16, progress_bar=False, seed=0)
metrics = train_model(cfg, (clean[:-24], noisy[:-24]), (clean[-24:], noisy[-24:]), work / "model", work / "ckpt")
model, meta = load_model(work / "model")
print(json.dumps({"listed": listed.get("toynet"), "metrics": metrics, "meta_model": meta["model"],
                  "cls": type(model).__name__}))
"""


def test_a_network_is_one_file_listed_trained_and_tracked(tmp_path):
    from medrestore.pipeline.deps import check, closure, stages

    for name in ("src", "stages"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "src" / "medrestore" / "models" / "toynet.py").write_text(TOY_NETWORK)

    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src"), "OMP_NUM_THREADS": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("MLFLOW_")}
    res = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, str(tmp_path / "work")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["listed"] == {"name": "toynet", "kind": "network", "task": "denoise",
                             "parameters": 3 * 4 * 9 + 4 + 4 * 3 * 9 + 3,
                             "paper": "a toy network of the registry test"}
    assert out["meta_model"] == "toynet" and out["cls"] == "ToyNet" and out["metrics"]["steps"] == 40
    assert np.isfinite(out["metrics"]["best_val_psnr"])

    # the new file is a code dependency of every training stage, through the models folder dvc.yaml already lists
    assert "src/medrestore/models/toynet.py" in {
        f.relative_to(tmp_path).as_posix() for f in closure(tmp_path / "stages" / "train.py", tmp_path)
    }
    for stage in ("train", "finetune", "train_vessel", "train_chain"):
        assert check(stage, stages(tmp_path)[stage], tmp_path) == ([], [])


def test_the_built_in_models_are_registered_once_by_their_own_modules():
    from medrestore.models import BASELINES, MODELS, build_model, register_model
    from medrestore.models.dncnn import DnCNN

    assert sorted(MODELS) == sorted(["cdae", "redae", "dncnn", "dncnn-green", "dncnn-blind", "irunet", "lapsrn",
                                     "srresnet", "srgan",
                                     "cyclegan-fc", "cyclegan"])
    assert list(BASELINES) == ["median", "nlmeans", "bm3d", "bicubic", "clahe"]
    assert MODELS["dncnn-blind"].cls is DnCNN and MODELS["srgan"].trainer == "srgan"
    assert MODELS["cyclegan"].options == {"cycle": "image"} and MODELS["cyclegan-fc"].options == {"cycle": "feature"}
    assert isinstance(build_model("dncnn", depth=3), DnCNN)
    with pytest.raises(ValueError, match="registered already"):
        register_model("dncnn", DnCNN, "denoise", "again")
    with pytest.raises(ValueError, match="trainer"):
        register_model("dncnn-x", DnCNN, "denoise", "x", trainer="diffusion")
    assert "dncnn-x" not in MODELS


TOY_METRIC = '''"""Two toy metrics: the fraction of dark pixels (no reference) and the mean absolute error."""

import numpy as np

from medrestore.evaluation.metrics import FULL, NO, Metric, register_metric


def dark_fraction(image, assets_dir=None):
    return float((np.asarray(image, float).mean(axis=-1) < 40).mean())


def mean_abs_error(image, reference, fov=None, assets_dir=None):
    return float(np.abs(np.asarray(image, float) - np.asarray(reference, float)).mean())


register_metric(Metric("dark_fraction", NO, lower_is_better=True, digits=3, table=True, paired=True, headline="dark",
                       compute=dark_fraction))
register_metric(Metric("mae", FULL, lower_is_better=True, compute=mean_abs_error))
'''


@pytest.fixture()
def toy_metric(tmp_path):
    from medrestore.evaluation import metrics as M

    saved = M.REGISTRY
    path = tmp_path / "toy_metric.py"
    path.write_text(TOY_METRIC)
    spec = importlib.util.spec_from_file_location("toy_metric", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)  # registered by import
        yield module
    finally:
        M.REGISTRY = saved
        M._derive()


def test_a_metric_is_one_file_computed_by_the_evaluation(toy_metric, chase_dir, assets_dir, tmp_path, capsys):
    from medrestore.cli import main
    from medrestore.core.io import read_image, write_png_atomic
    from medrestore.degradations import corrupt
    from medrestore.evaluation import metrics as M
    from medrestore.evaluation import scoring as E
    from medrestore.models.classical import median_filter
    from medrestore.report.tables import headline_numbers, table_metrics

    assert M.COLUMNS.index("dark_fraction") == M.COLUMNS.index("entropy") + 1 and "mae" in M.FULL_REFERENCE
    rows = []
    for i, name in enumerate(("Image_01L.jpg", "Image_03R.jpg", "Image_05L.jpg", "Image_07R.jpg")):
        clean = read_image(chase_dir / name)[300:428, 300:428]
        noisy, _ = corrupt(clean, {"kind": "gaussian", "sigma": 25}, [i])
        if i == 0:
            first_noisy = noisy
        restored = (median_filter(noisy / 255.0, 25.0).clip(0, 1) * 255).round().astype(np.uint8)
        for method, kind, image in (("degraded", "input", noisy), ("median", "baseline", restored),
                                    ("dark", "model", restored // 2)):
            # what score_restored computes before the vessel scores
            row = E.all_metrics(image, clean, None, str(assets_dir))
            rows.append({"task": "t", "method": method, "kind": kind, "image_id": f"chase_db1/{name}", "variant": "v",
                         "sigma": 25.0,
                         "scale": 1, **row})
            assert row["dark_fraction"] == toy_metric.dark_fraction(image) and row["mae"] == toy_metric.mean_abs_error(
                image, clean
            )
    table = E.per_image_table(rows)
    assert "dark_fraction" in table.columns and "mae" in table.columns and table["dark_fraction"].notna().all()
    summary = {"methods": E.summarise(table, seed=0), "variants": ["v"]}
    dark = summary["methods"]["dark"]["v"]["dark_fraction"]
    assert dark["mean"] > summary["methods"]["median"]["v"]["dark_fraction"]["mean"]  # halving the image darkens it
    paired = E.paired_tests(table, seed=0)["v"]["models"]["dark"]["dark_fraction"]
    assert paired["higher_is_better"] is False and paired["mean_diff"] > 0
    assert "dark_fraction" in table_metrics(summary, "v")
    assert headline_numbers(summary["methods"]["dark"]["v"], None)["dark"] == dark["mean"]

    write_png_atomic(tmp_path / "noisy.png", first_noisy)
    assert main(["metrics", str(tmp_path / "noisy.png"), "--assets", str(assets_dir), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["dark_fraction"] == pytest.approx(rows[0]["dark_fraction"])


def test_the_headline_of_metrics_json_is_read_from_the_registry():
    from medrestore.evaluation.metrics import headline

    numbers = headline()
    assert list(numbers) == ["psnr", "psnr_fov", "psnr_fov_e3", "psnr_green", "ssim", "niqe", "brisque", "thin_kept",
                             "invented",
                              "thin_kept_indep", "invented_indep"]
    assert numbers["thin_kept"] == ("manual_thin_recall_above_chance", "ref_thin_recall_above_chance")


def test_a_metric_without_its_computation_or_under_a_taken_name_is_refused():
    from medrestore.evaluation.metrics import NO, Metric, register_metric

    with pytest.raises(ValueError, match="no compute"):
        register_metric(Metric("sharpness", NO))
    with pytest.raises(ValueError, match="registered already"):
        register_metric(Metric("niqe", NO, compute=lambda image, assets_dir=None: 0.0))
