"""Shared fixtures: real images only (CHASE_DB1 from ../shared, scikit-image's fundus photograph)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CHASE = SHARED / "datasets" / "chase_db1"
ASSETS = SHARED / "assets" / "pyiqa"


def _require(path: Path) -> Path:
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: CI must have ../shared beside the checkout")
        pytest.skip(f"{path} not present on this machine")
    return path


@pytest.fixture(scope="session")
def chase_dir() -> Path:
    return _require(CHASE)


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    return _require(ASSETS)


@pytest.fixture(scope="session")
def retina() -> np.ndarray:
    import skimage.data

    return skimage.data.retina()


@pytest.fixture(scope="session")
def chase_image(chase_dir) -> np.ndarray:
    from medrestore.io import read_image

    return read_image(chase_dir / "Image_01L.jpg")


@pytest.fixture
def seeded_single_thread():
    """One torch thread and a fixed seed: small-model tests run ~10x faster than with 2 contending threads."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
