"""The FOV edge: PSNR of one trained denoiser inside the FOV and inside the FOV eroded by 3 px.

Cuts the pipeline's prepared images into patches with ``patchify.min_fov_fraction`` = MFF (into a
scratch folder), corrupts them for denoise-g25, trains run RUN of params.yaml (its standard settings,
or STEPS steps; ``fov``: with ``fov_loss``) and restores the 8 test images at sigma 25. Prints one JSON
line: psnr_fov, PSNR on the FOV eroded by 3 px (a 3x3 square, 3 times), their gap, the noisy input's.
Needs ``dvc repro prepare`` first. Nothing is written to the DVC outputs or to MLflow.

    .venv/bin/python benchmarks/fov_edge.py MFF RUN [STEPS|0] [fov]
"""
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from scipy import ndimage

from medrestore.core.io import read_image, read_json, read_mask
from medrestore.core.params import train_settings
from medrestore.data.corrupt import corrupt_task
from medrestore.data.patches import load_fov, load_patches, patchify
from medrestore.models import load_model
from medrestore.pipeline.train import train_targets
from medrestore.serving.inference import restore_array
from medrestore.training.config import TrainConfig
from medrestore.training.engine import train_model

root = Path(__file__).resolve().parents[1]
P = yaml.safe_load((root / "params.yaml").read_text())
mff = float(sys.argv[1])
run = sys.argv[2]
steps = int(sys.argv[3]) if len(sys.argv) > 3 else None
fl = len(sys.argv) > 4 and sys.argv[4] == "fov"
work = Path(os.environ.get("FOV_EDGE_WORK", "/tmp/fov_edge")) / (f"m{mff}" + ("f" if fl else ""))
work.mkdir(parents=True, exist_ok=True)
prep = root / "artifacts/prepared"
pp = dict(P["patchify"])
pp["min_fov_fraction"] = mff
if not (work / "patches/patches.json").exists():
    patchify(read_json(prep / "manifest.json"), prep, work / "patches", seed=P["seed"], **pp)
task = "denoise-g25"
if not (work / "c/corruption.json").exists():
    corrupt_task(work / "patches", work / "c", task=task, spec=P["corrupt"]["tasks"][task], seed=P["seed"],
                 prepared_dir=prep)
s = train_settings(P["train"], run, P["seed"], models_root=root / "artifacts/models")
if steps:
    s["max_steps"] = steps
s["progress_bar"] = False
s["fov_loss"] = fl

cfg = TrainConfig.from_params(s)
out = work / f"model-{run}"
t = time.time()
if not (out / "model.json").exists():
    train_model(cfg, (train_targets(work / "patches", work / "c"), load_patches(work / "c", "train")),
                (load_patches(work / "patches", "val"), load_patches(work / "c", "val")), out, work / f"ckpt-{run}",
                fov=(load_fov(work / "patches", "train"), load_fov(work / "patches", "val")) if fl else None)
print("train s", round(time.time() - t), "patches", read_json(work / "patches/patches.json")["counts"], flush=True)
net, meta = load_model(out)
net.eval()
meta_p = read_json(work / "patches/patches.json")
rows = []
for e in meta_p["test"]:
    clean = read_image(work / "patches" / e["image"], "RGB").astype(np.float64)
    fov = read_mask(work / "patches" / e["fov"])
    name = Path(e["image"]).name
    noisy = read_image(work / "c/test/s25" / name, "RGB")
    with torch.no_grad():
        r = restore_array(net, noisy.astype(np.float32) / 255, tile=512, overlap=32)
    r = np.clip(np.round(r * 255), 0, 255)
    er = ndimage.binary_erosion(fov, structure=np.ones((3, 3)), iterations=3)

    def ps(a, m, clean=clean):
        return 10 * np.log10(255**2 / np.mean((a[m] - clean[m]) ** 2))

    rows.append((ps(r, fov), ps(r, er), ps(noisy.astype(float), fov)))
a = np.array(rows).mean(0)
print(json.dumps({"fov_loss": fl, "mff": mff, "run": run, "psnr_fov": round(a[0], 3),
                  "psnr_fov_eroded3": round(a[1], 3), "gap": round(a[1] - a[0], 3), "noisy": round(a[2], 3)}),
                  flush=True)
