"""Blur and compression: Gaussian, defocus and motion blur, and a JPEG round trip.

Blur sizes are in pixels (never on the 0-255 scale of the noise sigmas). Kinds:

``gaussian_blur``  sigma | sigma_range: isotropic Gaussian with albumentations' kernel (PIL's support,
                   3.5 sigma) and separable filter (:func:`_gaussian_blur`, also used by
                   ``blur_downscale`` and ``fundus_blur``).
``defocus_blur``   radius | radius_range (integer), alias_blur=0.1: a disc kernel, albumentations'
                   ``defocus``.
``motion_blur``    length | length_range (odd kernel size), angle | angle_range=[0, 180],
                   direction=0.0: albumentations' line kernel with its random shift off (that draw
                   would not come from the corruption's rng), normalised to sum 1.
``jpeg``           quality | quality_range (1-100): OpenCV encode/decode, RGB reversed to BGR around
                   the call so the luma/chroma split weights the right channels.

The kinds whose recorded ``sigma`` is a Gaussian blur width are :data:`BLUR_SIGMA_KINDS`
(:func:`medrestore.degradations.blur_sigma` reads them).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medrestore.degradations.core import _alb, _draw, _draw_int, to_float, to_uint8

# Kinds whose params' "sigma" is the sigma of a Gaussian blur in pixels (of the step's input).
BLUR_SIGMA_KINDS = frozenset({"gaussian_blur", "blur_downscale", "fundus_blur"})


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with albumentations' kernel (PIL's support: 3.5 sigma) and separable filter."""
    if sigma <= 0:
        return image.astype(np.float32, copy=True)
    blur, pixel = _alb()
    kernel = blur.create_gaussian_kernel_1d(sigma, 0).astype(np.float32)
    return np.asarray(pixel.separable_convolve(np.ascontiguousarray(image, dtype=np.float32), kernel), dtype=np.float32)


def gaussian_blur(
    image: np.ndarray, rng: np.random.Generator, *, sigma: float | None = None, sigma_range: list[float] | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Isotropic Gaussian blur, ``sigma`` in pixels (albumentations' kernel and filter)."""
    s = _draw(rng, "sigma", sigma, sigma_range)
    if s < 0:
        raise ValueError(f"sigma must be >= 0, got {s}")
    return _gaussian_blur(image, s), {"sigma": s}


def defocus_blur(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    radius: int | None = None,
    radius_range: list[int] | None = None,
    alias_blur: float = 0.1,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Out-of-focus blur: a uniform disc kernel of ``radius`` pixels (integer), its edge softened by
    a small Gaussian (``alias_blur``), via albumentations' ``defocus``."""
    r = _draw_int(rng, "radius", radius, radius_range)
    if r < 0:
        raise ValueError(f"radius must be >= 0, got {r}")
    blur, _ = _alb()
    out = blur.defocus(np.ascontiguousarray(image, dtype=np.float32), r, float(alias_blur))
    return np.asarray(out, dtype=np.float32).reshape(image.shape), {"radius": r, "alias_blur": float(alias_blur)}


def motion_blur(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    length: int | None = None,
    length_range: list[int] | None = None,
    angle: float | None = None,
    angle_range: list[float] | None = None,
    direction: float = 0.0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Linear motion blur: a line kernel ``length`` pixels long (made odd, at least 3) at ``angle``
    degrees (0 = horizontal, 90 = vertical; drawn from [0, 180) unless given). ``direction`` in
    [-1, 1] biases the line backwards/forwards (0 = symmetric). albumentations'
    ``create_motion_kernel`` draws the line (its random shift is off: that draw would not come
    from ``rng``); the kernel is normalised to sum 1."""
    k = _draw_int(rng, "length", length, length_range)
    k = max(3, k + (1 - k % 2))
    a = _draw(rng, "angle", angle, angle_range, default_range=[0.0, 180.0])
    blur, pixel = _alb()
    kernel = blur.create_motion_kernel(k, a, float(direction), False, None).astype(np.float32)
    kernel /= kernel.sum()
    out = pixel.convolve(np.ascontiguousarray(image, dtype=np.float32), kernel)
    return np.asarray(out,
                      dtype=np.float32).reshape(image.shape), {"length": k, "angle": a, "direction": float(direction)}


def jpeg_compression(
    image: np.ndarray, rng: np.random.Generator, *, quality: int | None = None, quality_range: list[int] | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """JPEG encode/decode at ``quality`` (1-100) through OpenCV (albumentations'
    ``image_compression``). OpenCV reads three channels as BGR, so RGB is reversed around the call:
    otherwise its luma/chroma split (and chroma subsampling) would weight the wrong channels."""
    q = _draw_int(rng, "quality", quality, quality_range)
    if not 1 <= q <= 100:
        raise ValueError(f"quality must be in 1..100, got {q}")
    _, pixel = _alb()
    u8 = to_uint8(image)
    if u8.shape[2] == 3:
        out = pixel.image_compression(np.ascontiguousarray(u8[..., ::-1]), q, ".jpg")[..., ::-1]
    else:
        out = pixel.image_compression(u8, q, ".jpg")
    return to_float(np.asarray(out).reshape(image.shape)), {"quality": q}

