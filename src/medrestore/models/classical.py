"""Classical baselines: restoration methods with nothing to train.

Each is a function ``f(degraded, sigma, **kw) -> restored`` on float RGB images in [0, 1]. ``sigma``
(0-255 scale) is the true noise level recorded by the corrupt stage: the denoising baselines are
given the oracle noise level, which makes them as strong as they can be; the others ignore it.
``bicubic`` takes ``scale`` (the SR factor; its output is ``scale`` times larger).

Each function carries ``task`` (the task family it is for: denoise, sr or enhance) and ``paper``
(where it comes from), read by the model registry and ``medrestore models``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.restoration import denoise_nl_means

from medrestore.degradations import upsample_bicubic
from medrestore.models.registry import baseline


@baseline("median", "denoise", "Gondara2016 (median filter baseline)")
def median_filter(noisy: np.ndarray, sigma: float, size: int = 3) -> np.ndarray:
    """Per-channel 3x3 median filter (Gondara2016's baseline)."""
    return ndi.median_filter(noisy, size=(size, size, 1), mode="reflect")


@baseline("nlmeans", "denoise", "Gondara2016 (NL-means baseline, Buades et al. 2005)")
def nl_means(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """Non-local means (Buades et al.), scikit-image's fast mode, h = 0.8 sigma as its docs advise."""
    s = sigma / 255.0
    return denoise_nl_means(
        noisy, h=0.8 * s, sigma=s, patch_size=5, patch_distance=6, fast_mode=True, channel_axis=-1, preserve_range=True
    )


@baseline("bm3d", "denoise", "GilZuluaga2021 (BM3D comparison, Dabov et al. 2007)")
def bm3d_rgb(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """BM3D (Dabov et al.) through the reference ``bm3d`` package's colour variant (slow)."""
    import bm3d

    return np.clip(bm3d.bm3d_rgb(noisy, sigma_psd=max(sigma, 1e-3) / 255.0), 0.0, 1.0)


@baseline("bicubic", "sr", "Hayee2017 (bicubic upsampling, the SR reference of Ledig et al.)")
def bicubic(degraded: np.ndarray, sigma: float = 0.0, scale: int = 4) -> np.ndarray:
    """Bicubic upsampling of the low-resolution input by ``scale`` (PIL, as the corrupt stage downscales):
    :func:`medrestore.degradations.upsample_bicubic`, clipped to [0, 1] at ``scale`` 1 too."""
    return np.clip(upsample_bicubic(degraded, scale), 0.0, 1.0).astype(np.float32)


@baseline("clahe", "enhance", "Zhao2019 (CLAHE-based enhancement baselines)")
def clahe(degraded: np.ndarray, sigma: float = 0.0, clip_limit: float = 0.01) -> np.ndarray:
    """CLAHE (scikit-image ``equalize_adapthist``) on the L channel of CIELAB; colours kept."""
    from skimage import color, exposure

    lab = color.rgb2lab(np.clip(degraded, 0.0, 1.0))
    lab[..., 0] = 100.0 * exposure.equalize_adapthist(np.clip(lab[..., 0] / 100.0, 0.0, 1.0), clip_limit=clip_limit)
    return np.clip(color.lab2rgb(lab), 0.0, 1.0).astype(np.float32)
