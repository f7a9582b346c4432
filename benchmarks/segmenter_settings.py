"""Vessel segmenter settings: test AUC and Dice, and the clean test images' thin-vessel recall above chance.

Trains the train_segmenter stage's U-Net with params.yaml's ``segmenter`` settings overridden by the YAML
mapping OVERRIDES (into a scratch folder) on the pipeline's prepared images and split, and prints one JSON
line. Needs ``dvc repro patchify`` first. Nothing is written to the DVC outputs or to MLflow.

    .venv/bin/python benchmarks/segmenter_settings.py '{width: 16, depth: 4, steps: 1000, patch: 96}'
"""
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from medrestore.core.io import read_json
from medrestore.pipeline.train_segmenter import masked_images, train_segmenter_stage
from medrestore.vessels import load_vessel_segmenter, vessel_scores

root = Path(__file__).resolve().parents[1]
P = yaml.safe_load((root / "params.yaml").read_text())
over = yaml.safe_load(sys.argv[1]) if len(sys.argv) > 1 else {}
p = {**P["segmenter"], **over}
meta = read_json(root / "artifacts/patches/patches.json")
out = Path(os.environ.get("SEGMENTER_WORK", "/tmp/segmenter_settings")) / json.dumps(over, sort_keys=True).replace(
    " ", ""
).replace("/", "_")
out.mkdir(parents=True, exist_ok=True)
t = time.time()
m = train_segmenter_stage(root / "artifacts/prepared", meta, out, params=p, seed=P["seed"])
dt = time.time() - t
seg, _ = load_vessel_segmenter(out)
thin = []
for item in masked_images(root / "artifacts/prepared", meta, "test"):
    s, b = seg(item["image"], item["fov"])
    thin.append(vessel_scores(s, b, item["vessels"], item["fov"])["thin_recall_above_chance"])
print(json.dumps({"over": over, "sec": round(dt), "auc": m["auc"], "dice": m["dice"], "binarize": m["binarize"],
                  "clean_thin_above_chance": round(float(np.mean(thin)), 3)}), flush=True)
