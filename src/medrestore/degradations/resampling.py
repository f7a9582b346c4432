"""Super-resolution inputs (the output is SMALLER than the input) and the bicubic upsampling back.

Kinds:

``downscale``       scale (integer factor, e.g. 2 or 4), method="bicubic": nothing random.
``blur_downscale``  scale, sigma | sigma_range (pixels, at the high resolution), method="bicubic":
                    Krenz2018's low-resolution input. Krenz2018 says "downscaling and blurring"
                    without the blur's size or order; blur-then-downscale is the usual degradation
                    model, y = (x * k) downsampled.

Both first crop the image at its top-left corner to a multiple of ``scale`` (:func:`modcrop`), then
resize each channel as a float32 plane with PIL, whose filters widen with the scale factor
(antialiasing, like MATLAB's ``imresize`` that SR benchmarks use). albumentations' ``downscale`` is
not used: it returns the input size (down then up) and OpenCV's cubic shrink does not antialias.

:func:`upsample_bicubic` is the way back (PIL's bicubic filter, per channel): the evaluation's floor
for SR tasks and the ``bicubic`` baseline (:func:`medrestore.models.classical.bicubic`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from medrestore.degradations.blur import _gaussian_blur
from medrestore.degradations.core import _draw

_PIL_FILTERS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
    "area": Image.Resampling.BOX,
}


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
    """The top-left part of ``image`` whose height and width are multiples of ``scale``."""
    h, w = image.shape[0] - image.shape[0] % scale, image.shape[1] - image.shape[1] % scale
    return image[:h, :w]


def _resize_planes(image: np.ndarray, size: tuple[int, int], method: str) -> np.ndarray:
    """Each channel of a float H x W x C image resized to ``size`` (width, height) by PIL on a float32
    plane; the planes stacked back (PIL returns float32)."""
    planes = [
        np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32),
                                   mode="F").resize(size, _PIL_FILTERS[method]))
        for c in range(image.shape[2])
    ]
    return np.stack(planes, axis=2)


def _resize_down(image: np.ndarray, scale: int, method: str) -> np.ndarray:
    """Downscale by an integer factor with PIL on float32 planes.

    PIL widens the kernel by the scale factor (antialiasing), like MATLAB's ``imresize`` that SR
    benchmarks use to make their low-resolution inputs. albumentations' ``downscale`` is not used:
    it returns the image at its input size (down then up) and resizes with OpenCV, which does not
    antialias when shrinking with a cubic kernel."""
    if method not in _PIL_FILTERS:
        raise ValueError(f"method must be one of {', '.join(_PIL_FILTERS)}, not {method!r}")
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    hr = modcrop(image, scale)
    h, w = hr.shape[0] // scale, hr.shape[1] // scale
    if h == 0 or w == 0:
        raise ValueError(f"image {image.shape[:2]} is smaller than the scale {scale}")
    if scale == 1:
        return hr.astype(np.float32, copy=True)
    return _resize_planes(hr, (w, h), method).astype(np.float32)


def downscale(image: np.ndarray, rng: np.random.Generator, *, scale: int,
              method: str = "bicubic") -> tuple[np.ndarray, dict[str, Any]]:
    """Bicubic (by default) downscaling by an integer ``scale``: the output is H // scale x W // scale.

    The input is first cropped to a multiple of ``scale`` at its top-left corner; see the module
    docstring and :func:`sr_pair` for the matching high-resolution target. Nothing is random."""
    return _resize_down(image, int(scale), method), {"scale": int(scale)}


def blur_downscale(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    scale: int,
    sigma: float | None = None,
    sigma_range: list[float] | None = None,
    method: str = "bicubic",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Krenz2018's low-resolution input: Gaussian blur (``sigma`` pixels, at the high resolution),
    then downscaling by ``scale``. Krenz2018 says "downscaling and blurring" without the blur's
    size or order; blur-then-downscale is the usual degradation model (y = (x * k) downsampled)."""
    s = _draw(rng, "sigma", sigma, sigma_range)
    if s < 0:
        raise ValueError(f"sigma must be >= 0, got {s}")
    return _resize_down(_gaussian_blur(image, s), int(scale), method), {"scale": int(scale), "sigma": s}


def upsample_bicubic(image: np.ndarray, scale: int) -> np.ndarray:
    """Float H x W x C in [0, 1] upsampled ``scale`` times with PIL's bicubic filter, per channel,
    clipped to [0, 1] (bicubic overshoots at edges); ``scale`` 1 returns a float32 copy, unclipped."""
    if scale == 1:
        return image.astype(np.float32, copy=True)
    h, w = image.shape[0] * scale, image.shape[1] * scale
    return np.clip(_resize_planes(image, (w, h), "bicubic"), 0.0, 1.0).astype(np.float32)
