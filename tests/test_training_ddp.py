"""DDP with two CPU processes (gloo): trains, and its loss curve has the single-process shape.

Lightning's DDP launcher re-runs the main script for every rank, so the run lives in a small
script started as a subprocess (a pytest process cannot be re-run that way).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from medrestore.degradations import corrupt

pytestmark = pytest.mark.slow  # two training processes

SCRIPT = """
import sys, numpy as np, torch
from pathlib import Path
from medrestore.training.config import TrainConfig
from medrestore.training.engine import train_model
torch.set_num_threads(1)
d, out, devices = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
L = lambda n: np.load(d / n)
cfg = TrainConfig(model="lapsrn", model_kwargs={"scale": 1, "depth": 2, "features": 16}, loss="charbonnier", lr=2e-3,
                  max_steps=40, val_every=20, ckpt_every=20, batch_size=8, progress_bar=False, seed=3,
                  channels_last=False, accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto")
train_model(cfg, (L("c.npy"), L("n.npy")), (L("vc.npy"), L("vn.npy")), out, d / f"ckpt{devices}")
"""


def _cut(region, salt):
    clean = np.stack(
        [
            region[y : y + 24, x : x + 24]
            for y in range(0, region.shape[0] - 23, 12)
            for x in range(0, region.shape[1] - 23, 12)
        ]
    )
    return clean, np.stack([corrupt(p, {"kind": "gaussian", "sigma": 25}, [salt, i])[0] for i, p in enumerate(clean)])


def test_ddp_on_two_cpu_processes_trains_like_one(tmp_path, chase_image):
    (c, n), (vc, vn) = _cut(chase_image[380:572, 380:620], 1), _cut(chase_image[600:700, 300:460], 2)
    for name, arr in {"c.npy": c, "n.npy": n, "vc.npy": vc, "vn.npy": vn}.items():
        np.save(tmp_path / name, arr)
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    curves = {}
    for devices in (1, 2):
        res = subprocess.run([sys.executable, str(script), str(tmp_path), str(tmp_path / f"out{devices}"),
                              str(devices)],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        curves[devices] = pd.read_csv(tmp_path / f"out{devices}" / "curve.csv")
    assert "distributed_backend=gloo" in res.stderr or "gloo" in res.stderr + res.stdout
    single, ddp = curves[1], curves[2]
    assert list(single["step"]) == list(ddp["step"])  # same steps logged: the same schedule
    for curve in (single, ddp):
        loss = curve["train_loss"].dropna().to_numpy()
        assert loss[-1] < 0.9 * loss[0], loss  # both learn (from the identity: small steps)
        psnr = curve["val_psnr"].dropna().to_numpy()
        assert len(psnr) == 2 and psnr[-1] > psnr[0]
    # same shape, not identical: each rank sees its own half of a twice-as-large global batch
    assert not np.array_equal(single["train_loss"].to_numpy(), ddp["train_loss"].to_numpy())
    a, b = single["train_loss"].dropna().to_numpy(), ddp["train_loss"].dropna().to_numpy()
    assert np.corrcoef(a, b)[0, 1] > 0.5, (a, b)
