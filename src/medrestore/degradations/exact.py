"""Filters that give the same bytes on every x86-64 CPU.

OpenCV's float filters (``GaussianBlur``, ``blur``, ``resize``, ``cvtColor``, ``addWeighted``) and
BLAS matrix products pick their vector code when they run (SSE, AVX2, AVX-512), and the different
code paths add in different orders: the corrupt stage of the enhance task gave other bytes on an
AVX2-only CPU than on an AVX-512 one. The versions here compute in float64 with SciPy's separable
correlation and NumPy element-wise arithmetic, neither of which dispatches on the CPU, and round to
float32 once at the end. tests/test_degradations_exact.py checks the enhance corruptions under
OpenCV's optimised and plain code paths and with NumPy's AVX-512 kernels switched off.

The kernels follow OpenCV's definitions (Gaussian taps ``exp(-x^2 / (2 sigma^2))`` normalised, the
automatic size ``2 * round(4 sigma) + 1`` of float images, box ``1 / k``), the borders OpenCV's names:
``reflect101`` (OpenCV's default, ``gfedcb|abcdefgh|gfedcba``), ``reflect`` (``fedcba|abcdef``) and
``constant`` (zeros).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

_MODES = {"reflect101": "mirror", "reflect": "reflect", "constant": "constant"}


def gaussian_kernel(sigma: float, size: int = 0) -> np.ndarray:
    """The 1-D Gaussian taps OpenCV uses for ``sigma`` (size 0: OpenCV's size for float images)."""
    if size <= 0:
        size = 2 * int(round(4 * sigma)) + 1
    half = (size - 1) / 2.0
    taps = [math.exp(-((i - half) ** 2) / (2.0 * sigma * sigma)) for i in range(size)]
    total = math.fsum(taps)
    return np.array([t / total for t in taps], dtype=np.float64)


def _separable(image: np.ndarray, k_rows: np.ndarray, k_cols: np.ndarray, border: str) -> np.ndarray:
    x = np.asarray(image, dtype=np.float64)
    mode = _MODES[border]
    x = ndimage.correlate1d(x, k_rows, axis=0, mode=mode, cval=0.0)
    x = ndimage.correlate1d(x, k_cols, axis=1, mode=mode, cval=0.0)
    return x.astype(np.float32)


def gaussian_blur(image: np.ndarray, sigma: float, size: tuple[int, int] = (0, 0),
                  border: str = "reflect101") -> np.ndarray:
    """``cv2.GaussianBlur(image, size, sigma)`` (size = (width, height); 0: from sigma) on a 2-D map or
    an H x W x C image."""
    kx, ky = gaussian_kernel(sigma, size[0]), gaussian_kernel(sigma, size[1])
    return _separable(image, ky, kx, border)


def box_blur(image: np.ndarray, k: int, border: str = "reflect101") -> np.ndarray:
    """``cv2.blur(image, (k, k))``: the mean of each k x k window."""
    taps = np.full(k, 1.0 / k, dtype=np.float64)
    return _separable(image, taps, taps, border)


def shrink_area(field: np.ndarray, factor: int) -> np.ndarray:
    """The mean of each ``factor`` x ``factor`` block (whole blocks from the top-left corner; the few
    rows and columns beyond the last whole block are left out): an exact area reduction."""
    h, w = field.shape[0] // factor, field.shape[1] // factor
    x = np.asarray(field[: h * factor, : w * factor], dtype=np.float64)
    return x.reshape(h, factor, w, factor).mean(axis=(1, 3)).astype(np.float32)


def _linear_taps(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source index pairs and weights of a bilinear resize along one axis (pixel centres aligned,
    OpenCV's INTER_LINEAR convention, edges clamped)."""
    pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0.0, n_in - 1.0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, pos - lo


def resize_linear(field: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of a 2-D map to ``height`` x ``width``."""
    x = np.asarray(field, dtype=np.float64)
    lo, hi, t = _linear_taps(height, x.shape[0])
    x = x[lo] * (1.0 - t)[:, None] + x[hi] * t[:, None]
    lo, hi, t = _linear_taps(width, x.shape[1])
    x = x[:, lo] * (1.0 - t)[None, :] + x[:, hi] * t[None, :]
    return x.astype(np.float32)


def luma(image: np.ndarray) -> np.ndarray:
    """Grey level of an RGB image with OpenCV's RGB2GRAY weights (0.299, 0.587, 0.114), in float64."""
    x = np.asarray(image, dtype=np.float64)
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def mean(values: np.ndarray) -> float:
    """The mean in float64 (NumPy's pairwise sum, which does not depend on the CPU's vector unit)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.sum() / v.size) if v.size else 0.0
