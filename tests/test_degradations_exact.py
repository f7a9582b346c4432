"""The enhance task's corruptions give the same bytes whichever vector code the libraries pick.

Each case runs in a fresh process under settings that select other code paths on this CPU: OpenCV's
plain (not SIMD-optimised) functions, NumPy without its AVX-512 (and AVX2) kernels, PyTorch's
default CPU capability. The same bytes under all of them is what lets the corrupt stage reproduce on
an AVX2-only machine the lock written on an AVX-512 one (OpenCV's float GaussianBlur/blur/resize
did not: tests the old code fails)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import hashlib, json, sys
import cv2
cv2.setUseOptimized(sys.argv[1] == "1")
import numpy as np
from medrestore.degradations import corrupt
from medrestore.data.fov import prepare_arrays
from medrestore.core.io import read_image
specs = json.loads(sys.argv[3])
image, fov, _ = prepare_arrays(read_image(sys.argv[2]), None, size=256)
out = {}
for name, spec in specs.items():
    for seed in range(3):
        y, params = corrupt(image, spec, [2026, seed], fov)
        out[f"{name}/{seed}"] = hashlib.sha256(y.tobytes()).hexdigest()
print(json.dumps(out))
"""

SETTINGS = {
    "opencv plain": ("0", {}),
    "numpy without AVX-512": ("1",
                              {"NPY_DISABLE_CPU_FEATURES": "AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL "
                                                           "AVX512_ICL AVX512_SPR"}),
    "numpy without AVX2, torch default, opencv plain": ("0",
                                                        {"NPY_DISABLE_CPU_FEATURES": "AVX2 FMA3 AVX512F AVX512CD "
                                                                                     "AVX512_SKX AVX512_CLX "
                                                                                     "AVX512_CNL AVX512_ICL AVX512_SPR",
                                                              "ATEN_CPU_CAPABILITY": "default"}),
}


def _hashes(optimised: str, env: dict, image: Path, specs: dict) -> dict:
    full = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    res = subprocess.run([sys.executable, "-c", SCRIPT, optimised, str(image), json.dumps(specs)], env=full,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def enhance_specs() -> dict:
    task = yaml.safe_load((REPO / "params.yaml").read_text())["corrupt"]["tasks"]["enhance"]
    return {"train": task["train"], **{f"test-{k}": v for k, v in task["test"].items()}}


@pytest.fixture(scope="module")
def reference(chase_dir, enhance_specs):
    return _hashes("1", {}, chase_dir / "Image_01L.jpg", enhance_specs)


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_enhance_corruptions_are_the_same_bytes_on_every_code_path(setting, chase_dir, enhance_specs, reference):
    optimised, env = SETTINGS[setting]
    assert _hashes(optimised, env, chase_dir / "Image_01L.jpg", enhance_specs) == reference
