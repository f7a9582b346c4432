"""A GAN run killed with SIGKILL resumes from its last checkpoint and ends byte-identical to an
uninterrupted run (CPU), like the paired engine (tests/test_training.py)."""

from __future__ import annotations

import numpy as np

from conftest import kill_and_resume
from medrestore.degradations import sr_pair

SCRIPT = """
import sys, numpy as np, torch
from pathlib import Path
from medrestore.training.config import TrainConfig
from medrestore.training.engine import train_model
torch.set_num_threads(1)
d = Path(sys.argv[1]); out = Path(sys.argv[2])
L = lambda n: np.load(d / n, mmap_mode="r")
cfg = TrainConfig(model="srgan", model_kwargs={"n_blocks": 1, "features": 16}, disc_kwargs={"features": 8, "dense": 32},
                  max_steps=30, val_every=10, ckpt_every=5, batch_size=8, pretrain_steps=5, adv_weight=1e-3, lr=1e-4,
                  progress_bar=False, seed=13, channels_last=False)
train_model(cfg, (L("hr.npy"), L("lr.npy")), (L("vhr.npy"), L("vlr.npy")), out, d / "ckpt")
"""


def _pairs(region: np.ndarray, salt: int) -> tuple[np.ndarray, np.ndarray]:
    patches = [region[y : y + 32, x : x + 32] for y in range(0, region.shape[0] - 31,
                                                             16) for x in range(0, region.shape[1] - 31, 16)]
    hr, lr = zip(*[sr_pair(p, {"kind": "downscale", "scale": 4}, [salt, i])[:2] for i, p in enumerate(patches)])
    return np.stack(hr), np.stack(lr)


def test_killed_srgan_resumes_and_ends_byte_identical(tmp_path, chase_image):
    hr, lr = _pairs(chase_image[380:540, 380:620], 1)
    vhr, vlr = _pairs(chase_image[600:680, 300:420], 2)
    # past pre-training (step 5)
    kill_and_resume(tmp_path, SCRIPT, {"hr.npy": hr, "lr.npy": lr, "vhr.npy": vhr, "vlr.npy": vlr}, settle=0.3)
    assert "d_loss" in (tmp_path / "out" / "curve.csv").read_text().splitlines()[0]
    assert not list((tmp_path / "ckpt").glob("*/last.ckpt"))
