"""Classical baselines: restoration methods with nothing to train.

Each is a function ``f(noisy, sigma) -> restored`` on float RGB images in [0, 1]. ``sigma`` (0-255
scale) is the true noise level recorded by the corrupt stage: the baselines are given the oracle
noise level, which makes them as strong as they can be.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.restoration import denoise_nl_means


def median_filter(noisy: np.ndarray, sigma: float, size: int = 3) -> np.ndarray:
    """Per-channel 3x3 median filter (seed 002's baseline)."""
    return ndi.median_filter(noisy, size=(size, size, 1), mode="reflect")


def nl_means(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """Non-local means (Buades et al.), scikit-image's fast mode, h = 0.8 sigma as its docs advise."""
    s = sigma / 255.0
    return denoise_nl_means(
        noisy, h=0.8 * s, sigma=s, patch_size=5, patch_distance=6, fast_mode=True, channel_axis=-1, preserve_range=True
    )


def bm3d_rgb(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """BM3D (Dabov et al.) through the reference ``bm3d`` package's colour variant (slow)."""
    import bm3d

    return np.clip(bm3d.bm3d_rgb(noisy, sigma_psd=max(sigma, 1e-3) / 255.0), 0.0, 1.0)
