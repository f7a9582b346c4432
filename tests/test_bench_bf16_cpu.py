"""benchmarks/bf16_cpu.py on a tiny artifacts folder cut from scikit-image's fundus photograph: both
precisions train with a run's settings from params.yaml, seeded runs repeat their PSNR, and the
bf16 restoration is compared with the float32 one in 8-bit levels."""

from pathlib import Path

import numpy as np
import torch
import yaml

from benchmarks import bench, bf16_cpu
from medrestore.models import build_model, save_model

REPO = Path(__file__).resolve().parents[1]


def _artifacts(root: Path) -> Path:
    clean, noisy = bench._noisy_patches(48, 40)
    (root / "patches").mkdir(parents=True)
    (root / "corrupt" / "denoise-g25").mkdir(parents=True)
    np.save(root / "patches" / "train.npy", clean[:32])
    np.save(root / "patches" / "val.npy", clean[32:])
    np.save(root / "corrupt" / "denoise-g25" / "train.npy", noisy[:32])
    np.save(root / "corrupt" / "denoise-g25" / "val.npy", noisy[32:])
    return root


def test_training_alternates_precisions_with_the_runs_settings(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    a = _artifacts(tmp_path / "artifacts")
    r = bf16_cpu.bench_training(params, "denoise-g25-cdae", a, steps=6, repeats=2)
    assert r["model"] == "cdae" and r["steps"] == 6
    assert r["batch_size"] == params["train"]["profiles"]["standard"]["models"]["cdae"]["batch_size"]
    assert set(r["step_ms_median"]) == set(bf16_cpu.PRECISIONS) and all(v > 0 for v in r["step_ms_median"].values())
    for precision in bf16_cpu.PRECISIONS:
        assert len(r["run_seconds"][precision]) == 2
        (psnrs,) = r["val_psnr"][precision].values()  # one seed: params.yaml's
        assert len(psnrs) == 2 and psnrs[0] == psnrs[1] and 5 < psnrs[0] < 60  # seeded: repeats agree
    assert r["val_psnr"]["32-true"] != r["val_psnr"]["bf16-mixed"]  # autocast changes the arithmetic


def test_inference_compares_bf16_with_float32_in_8bit_levels(tmp_path):
    torch.manual_seed(0)
    save_model(build_model("cdae"), tmp_path / "cdae", name="cdae", kwargs={})
    clean = bench._test_image(64)
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
    r = bf16_cpu.bench_inference(tmp_path / "cdae", noisy, clean.astype(np.float64), repeats=1)
    assert set(r["seconds"]) == {"float32", "bf16"} and r["speedup"] > 0
    assert 0 <= r["max_abs_diff_8bit"] <= 8 and 0 <= r["pixels_differing"] <= 1
    assert abs(r["psnr_vs_clean_db"]["float32"] - r["psnr_vs_clean_db"]["bf16"]) < 0.5
