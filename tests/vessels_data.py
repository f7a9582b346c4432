"""CHASE_DB1 cases shared by the vessel tests (tests/test_vessels_*.py, test_training_segmenter.py,
test_pipeline_train_segmenter.py): real images and both observers' manual masks, prepared once per
size and cached for the session."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from medrestore.core.io import read_image
from medrestore.data.fov import prepare_arrays
from medrestore.data.sources import load_mask
from medrestore.degradations import corrupt
from medrestore.vessels import segment_frangi


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Import into a test module to run it on one torch thread. The test machine's 2 cores are
    shared with a training run: 2 OpenMP threads competing for busy cores were measured 20x slower
    per training step than 1 thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@functools.cache
def raw(chase_dir, stem):
    """(image, first observer, second observer) at full resolution."""
    image = read_image(chase_dir / f"{stem}.jpg")
    return image, load_mask(chase_dir / f"{stem}_1stHO.png"), load_mask(chase_dir / f"{stem}_2ndHO.png")


@functools.cache
def prepared(chase_dir, stem, size):
    """(image, fov, first observer, second observer) at ``size`` px."""
    image, first, second = raw(chase_dir, stem)
    img, fov, v1 = prepare_arrays(image, first, size=size)
    _, _, v2 = prepare_arrays(image, second, size=size)
    return img, fov, v1, v2


@functools.cache
def frangi_maps(chase_dir, stem, size, variant="clean"):
    """Frangi's (score, binary) maps of the prepared image, clean, blurred (sigma 1.5 px) or noisy (sigma 25)."""
    img, fov, _, _ = prepared(chase_dir, stem, size)
    if variant == "blur":
        img = np.stack([ndi.gaussian_filter(img[..., c].astype(np.float64), 1.5) for c in range(3)],
                       -1).round().clip(0, 255).astype(np.uint8)
    elif variant == "noise":
        img, _ = corrupt(img, {"kind": "gaussian", "sigma": 25}, [7])
    return segment_frangi(img, fov)


def small_training_set(chase_dir):
    """(images, masks, fovs) of two CHASE_DB1 images at 128 px."""
    data = [prepared(chase_dir, s, 128) for s in ("Image_01L", "Image_02R")]
    return [d[0] for d in data], [d[2] for d in data], [d[1] for d in data]
