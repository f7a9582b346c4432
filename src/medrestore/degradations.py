"""Seeded, replayable corruptions.

Every corruption is a function ``f(image, rng, **spec) -> (degraded, params)`` on float images in
[0, 1] (H x W x C, any C). ``rng`` is a ``numpy.random.Generator`` built from a list of seed words;
every random choice is drawn from it (no global RNG, no clock), and the sampled parameters are
returned, JSON-serialisable, so they can be saved beside the output. Calling :func:`corrupt` again
with the same image, spec, seed words (and FOV mask) replays the corruption byte for byte.

Results are clipped to [0, 1] and quantised to 8 bits, as an acquired image would be (GilZuluaga2021).
Sigmas of noise are on the 0-255 scale, as in the papers; blur sizes are in pixels.

Kinds (``spec = {"kind": name, **keys}``; ``x`` or ``x_range`` means: give exactly one, a fixed value
or a ``[low, high]`` range drawn uniformly per call):

noise
  ``gaussian``            sigma | sigma_range                              (Hayee2017, GilZuluaga2021)
  ``poisson``             peak | peak_range   (expected photon count at white)
  ``gaussian_proportion`` p | p_range, sigma | sigma_range                 (Gondara2016)
  ``poisson_proportion``  p | p_range, lam | lam_range, count=255          (Gondara2016)
  ``salt_pepper``         amount | amount_range, salt_ratio=0.5
  ``speckle``             sigma | sigma_range  (multiplicative: x + x * N(0, sigma/255))
blur and compression
  ``gaussian_blur``       sigma | sigma_range (pixels)
  ``defocus_blur``        radius | radius_range (integer pixels), alias_blur=0.1
  ``motion_blur``         length | length_range (odd kernel size), angle | angle_range=[0, 180],
                          direction=0.0
  ``jpeg``                quality | quality_range (1-100)
super-resolution inputs (the output is SMALLER than the input)
  ``downscale``           scale (integer factor, e.g. 2 or 4), method="bicubic"
  ``blur_downscale``      scale, sigma | sigma_range, method="bicubic"     (Krenz2018)
fundus (cofe-Net, Shen et al. 2020; ArcNet for the cataract); inside the FOV, result times the FOV
  ``fundus_colour``       brightness_range=[0.7, 1.2], contrast_range=[0.6, 1.4],
                          saturation_range=[0.6, 1.4]
  ``fundus_halo``         inner_range=[0.75, 1.0], outer_range=[1.0, 1.5], offset=0.125, strength=1.0,
                          tint_choices=[1, 2]
  ``fundus_hole``         diameter_range=[0.4, 0.7], min_mean=0.25
  ``fundus_spots``        count_range=[5, 10], size_range=[0.01, 0.05], reference_size=512
  ``fundus_blur``         sigma_range=[5, 15] (at reference_size=512; scaled with min(H, W)),
                          kernel="full" | "cofe"
  ``cataract``            offset=0.3, kernel_choices=[1, 3, 5, 7], haze_range=[0.6, 0.8],
                          attenuation=0.8, contrast_range=[0.9, 1.3], brightness_range=[0.9, 1.0],
                          saturation_range=[0.9, 1.3]
composition
  ``chain``               steps: [spec, ...] applied in order with one rng; params {"steps": [...]}
  ``fundus_random``       cofe-Net's random subset of its 3 factors (illumination = colour, halo,
                          hole; spots; blur): probabilities={factor: p} (0.5 each),
                          at_least_one=True, options={component: {keys}}

The FOV mask. ``corrupt(image, spec, seed_words, fov=mask)`` passes the boolean H x W mask to every
corruption that accepts a ``fov`` argument (the fundus ones and the two compositions); without a
mask they treat the whole frame as the FOV. The other corruptions act on the whole frame.

Super-resolution pairs. ``downscale`` and ``blur_downscale`` first crop the image at its top-left
corner to a multiple of ``scale`` (the usual "modcrop"), then resize it. The matching
high-resolution target is therefore ``image[:lr_h * s, :lr_w * s]`` where ``s`` is the product of
all scales in the spec (:func:`spec_scale`); :func:`sr_pair` returns ``(hr, lr, params)`` directly::

    hr, lr, params = sr_pair(clean_uint8, {"kind": "downscale", "scale": 4}, seed_words)
    assert hr.shape[:2] == (lr.shape[0] * 4, lr.shape[1] * 4)
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import math
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
from PIL import Image

Degradation = Callable[..., tuple[np.ndarray, dict[str, Any]]]

# Luma weights used for grey levels (ITU-R BT.601, as torchvision and PIL use them).
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@functools.cache
def _alb():
    """albumentations' functional modules, imported on first use (the import takes seconds)."""
    from albumentations.augmentations.blur import functional as blur
    from albumentations.augmentations.pixel import functional as pixel

    return blur, pixel


# ---------------------------------------------------------------------------------------------
# parameter helpers
# ---------------------------------------------------------------------------------------------


def _bounds(name: str, value, value_range, default_range):
    """``("fixed", value)`` or ``("range", (low, high))``, after checking the spec's keys."""
    if value is not None and value_range is not None:
        raise ValueError(f"give {name} or {name}_range, not both")
    if value is not None:
        return "fixed", value
    bounds = value_range if value_range is not None else default_range
    if bounds is None:
        raise ValueError(f"needs {name} or {name}_range")
    if float(bounds[1]) < float(bounds[0]):
        raise ValueError(f"{name}_range must be [low, high], got {list(bounds)}")
    return "range", bounds


def _draw(rng: np.random.Generator, name: str, value, value_range, default_range=None) -> float:
    """A fixed ``value``, or a uniform draw from ``value_range`` (or ``default_range``)."""
    kind, v = _bounds(name, value, value_range, default_range)
    return float(v) if kind == "fixed" else float(rng.uniform(float(v[0]), float(v[1])))


def _draw_int(rng: np.random.Generator, name: str, value, value_range, default_range=None) -> int:
    """A fixed integer, or one drawn uniformly from the inclusive range."""
    kind, v = _bounds(name, value, value_range, default_range)
    return int(v) if kind == "fixed" else int(rng.integers(int(v[0]), int(v[1]) + 1))


def _uniform(rng: np.random.Generator, bounds, name: str) -> float:
    lo, hi = float(bounds[0]), float(bounds[1])
    if hi < lo:
        raise ValueError(f"{name} must be [low, high], got {list(bounds)}")
    return float(rng.uniform(lo, hi))


def _check_probability(name: str, p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {p}")
    return p


def _pixel_mask(rng: np.random.Generator, shape: tuple[int, ...], p: float) -> np.ndarray:
    """Each pixel (all its channels together) chosen independently with probability ``p``."""
    return rng.random(shape[:2]) < p


def _fov_mask(image: np.ndarray, fov: np.ndarray | None) -> np.ndarray:
    if fov is None:
        return np.ones(image.shape[:2], dtype=bool)
    fov = np.asarray(fov).astype(bool)
    if fov.shape != image.shape[:2]:
        raise ValueError(f"FOV mask shape {fov.shape} does not match the image's {image.shape[:2]}")
    return fov


def _in_fov(out: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] and zero everything outside the FOV (cofe-Net multiplies by the mask)."""
    return (np.clip(out, 0.0, 1.0) * fov[..., None]).astype(np.float32)


def _grey(image: np.ndarray) -> np.ndarray:
    if image.shape[2] == 3:
        return image @ _LUMA
    return image.mean(axis=2)


def _fov_mean(image: np.ndarray, fov: np.ndarray) -> float:
    return float(image[fov].mean()) if fov.any() else 0.0


def _smooth(field: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of a 2-D map (illumination, haze). Large sigmas are done on a map
    shrunk by area averaging and brought back bilinearly: the map is smooth at that scale, and a
    full-resolution kernel of several hundred taps takes seconds per image."""
    field = field.astype(np.float32)
    if sigma <= 0:
        return field
    h, w = field.shape
    factor = int(sigma // 8)
    if factor >= 2 and min(h, w) // factor >= 8:
        small = cv2.resize(field, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigmaX=sigma / factor, borderType=cv2.BORDER_REFLECT)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.GaussianBlur(field, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)


def _disc(shape: tuple[int, int], cx: float, cy: float, radius: float) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return ((xx - cx) ** 2 + (yy - cy) ** 2) <= radius**2


def _contrast(image: np.ndarray, factor: float, fov: np.ndarray) -> np.ndarray:
    """Contrast about the mean grey level inside the FOV.

    torchvision and PIL pivot on the mean of the whole frame; for a fundus photograph that mean
    includes the black surround, so the result would depend on how much border a crop keeps. The
    pivot here is the FOV's mean (a deliberate deviation from cofe-Net/ArcNet)."""
    mean = _fov_mean(_grey(image), fov)
    return np.clip(mean + factor * (image - mean), 0.0, 1.0).astype(np.float32)


def _brightness(image: np.ndarray, factor: float) -> np.ndarray:
    _, pixel = _alb()
    return np.clip(pixel.adjust_brightness_torchvision(image, factor), 0.0, 1.0).astype(np.float32)


def _saturation(image: np.ndarray, factor: float) -> np.ndarray:
    """albumentations' torchvision-equivalent saturation (a blend with the grey image; RGB only)."""
    if image.shape[2] != 3:
        return image
    _, pixel = _alb()
    return np.asarray(pixel.adjust_saturation_torchvision(np.ascontiguousarray(image), factor), dtype=np.float32)


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with albumentations' kernel (PIL's support: 3.5 sigma) and separable filter."""
    if sigma <= 0:
        return image.astype(np.float32, copy=True)
    blur, pixel = _alb()
    kernel = blur.create_gaussian_kernel_1d(sigma, 0).astype(np.float32)
    return np.asarray(pixel.separable_convolve(np.ascontiguousarray(image, dtype=np.float32), kernel), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# noise
# ---------------------------------------------------------------------------------------------


def gaussian_noise(
    image: np.ndarray, rng: np.random.Generator, *, sigma: float | None = None, sigma_range: list[float] | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Additive white Gaussian noise on every channel.

    ``sigma`` fixed (Hayee2017: 25), or drawn uniformly from ``sigma_range`` per call (GilZuluaga2021's
    blind setting: [0, 50]). Both on the 0-255 scale.
    """
    if (sigma is None) == (sigma_range is None):
        raise ValueError("gaussian noise needs exactly one of sigma or sigma_range")
    s = float(sigma) if sigma is not None else float(rng.uniform(sigma_range[0], sigma_range[1]))
    noisy = image + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(s / 255.0)
    return noisy, {"sigma": s}


def poisson_noise(
    image: np.ndarray, rng: np.random.Generator, *, peak: float | None = None, peak_range: list[float] | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Photon-count (shot) noise: counts ~ Poisson(x * peak), output = counts / peak.

    ``peak`` is the expected count of a white pixel; the variance of a pixel of value x (on [0, 1])
    is x / peak, so the noise grows with the signal and falls as the light (peak) rises. This is
    the physical Poisson model; Gondara2016's additive "Poisson with lambda" is ``poisson_proportion``.
    albumentations' ``shot_noise`` is not used: it linearises with a 2.2 gamma first, which is not
    the plain photon-count model.
    """
    pk = _draw(rng, "peak", peak, peak_range)
    if pk <= 0:
        raise ValueError(f"peak must be positive, got {pk}")
    lam = np.clip(image, 0.0, None).astype(np.float64) * pk
    noisy = (rng.poisson(lam) / pk).astype(np.float32)
    return noisy, {"peak": pk}


def gaussian_proportion(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    p: float | None = None,
    p_range: list[float] | None = None,
    sigma: float | None = None,
    sigma_range: list[float] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Gaussian noise on a random proportion ``p`` of the pixels only (Gondara2016, Table I).

    Each pixel is chosen independently with probability p (all its channels together: Gondara2016's
    images are grey); the chosen ones get N(0, sigma) on every channel, the others are untouched.
    ``sigma`` is on the 0-255 scale like every sigma here. Gondara2016 scaled its images to [0, 1], so
    its "sigma = 1" is sigma 255 here. Note: its Table IV SSIMs fit the other reading of "p" (a
    noise factor, x + p * N(0, sigma), i.e. plain ``gaussian`` with sigma = 255 * p * sigma) at
    least as well; this kind implements the proportion-of-pixels reading the text states.
    """
    pp = _check_probability("p", _draw(rng, "p", p, p_range))
    s = _draw(rng, "sigma", sigma, sigma_range)
    chosen = _pixel_mask(rng, image.shape, pp)
    noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(s / 255.0)
    noisy = image + noise * chosen[..., None]
    return noisy.astype(np.float32), {"p": pp, "sigma": s}


def poisson_proportion(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    p: float | None = None,
    p_range: list[float] | None = None,
    lam: float | None = None,
    lam_range: list[float] | None = None,
    count: float = 255.0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Additive Poisson(lambda) noise on a random proportion ``p`` of the pixels (Gondara2016).

    Chosen pixels (probability p each, all channels) get k * count / 255 added per channel, with
    k ~ Poisson(lam). ``count`` is the intensity of one count on the 0-255 scale; the default 255
    is Gondara2016 taken literally (integer counts added to images in [0, 1]), which turns most
    chosen pixels white. Counts are drawn per channel and a value that draws k = 0 stays
    unchanged, so the share of changed values (pixel-channels) is about p * (1 - exp(-lam)).
    """
    pp = _check_probability("p", _draw(rng, "p", p, p_range))
    lm = _draw(rng, "lam", lam, lam_range)
    if lm < 0:
        raise ValueError(f"lam must be >= 0, got {lm}")
    chosen = _pixel_mask(rng, image.shape, pp)
    counts = rng.poisson(lm, size=image.shape).astype(np.float32)
    noisy = image + counts * np.float32(float(count) / 255.0) * chosen[..., None]
    return noisy.astype(np.float32), {"p": pp, "lam": lm, "count": float(count)}


def salt_pepper(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    amount: float | None = None,
    amount_range: list[float] | None = None,
    salt_ratio: float = 0.5,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Impulse noise: a share ``amount`` of the pixels set to white (salt) or black (pepper).

    A pixel is salt with probability amount * salt_ratio and pepper with amount * (1 - salt_ratio);
    all its channels are set together. The masks come from ``rng``; albumentations'
    ``apply_salt_and_pepper`` writes them.
    """
    amt = _check_probability("amount", _draw(rng, "amount", amount, amount_range))
    ratio = _check_probability("salt_ratio", float(salt_ratio))
    u = rng.random(image.shape[:2])
    salt = u < amt * ratio
    pepper = (u >= amt * ratio) & (u < amt)
    _, pixel = _alb()
    out = pixel.apply_salt_and_pepper(image.astype(np.float32), salt, pepper)
    return np.asarray(out, dtype=np.float32), {"amount": amt, "salt_ratio": ratio}


def speckle_noise(
    image: np.ndarray, rng: np.random.Generator, *, sigma: float | None = None, sigma_range: list[float] | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Multiplicative Gaussian (speckle) noise: x + x * n, n ~ N(0, sigma / 255) per channel.

    ``sigma`` is the noise's standard deviation at white on the 0-255 scale (so at grey level g
    it is sigma * g / 255). Written in numpy: albumentations' MultiplicativeNoise draws a uniform,
    not a Gaussian, multiplier.
    """
    s = _draw(rng, "sigma", sigma, sigma_range)
    n = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(s / 255.0)
    return (image + image * n).astype(np.float32), {"sigma": s}


# ---------------------------------------------------------------------------------------------
# blur and compression
# ---------------------------------------------------------------------------------------------


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
    return np.asarray(out, dtype=np.float32).reshape(image.shape), {"length": k, "angle": a, "direction": float(direction)}


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


# ---------------------------------------------------------------------------------------------
# super-resolution inputs
# ---------------------------------------------------------------------------------------------

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
    planes = [
        np.asarray(Image.fromarray(np.ascontiguousarray(hr[..., c], dtype=np.float32), mode="F").resize((w, h), _PIL_FILTERS[method]))
        for c in range(hr.shape[2])
    ]
    return np.stack(planes, axis=2).astype(np.float32)


def downscale(image: np.ndarray, rng: np.random.Generator, *, scale: int, method: str = "bicubic") -> tuple[np.ndarray, dict[str, Any]]:
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


# ---------------------------------------------------------------------------------------------
# fundus degradations (cofe-Net, Shen et al. 2020; ArcNet's cataract simulation)
# ---------------------------------------------------------------------------------------------

# cofe-Net's three halo tints (R, G, B in 0-255): a warm white and two coloured variants.
HALO_TINTS = ((251, 249, 246), (141, 238, 238), (177, 195, 147))


def fundus_colour(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    fov: np.ndarray | None = None,
    brightness_range: list[float] = (0.7, 1.2),
    contrast_range: list[float] = (0.6, 1.4),
    saturation_range: list[float] = (0.6, 1.4),
) -> tuple[np.ndarray, dict[str, Any]]:
    """cofe-Net's colour degradation: brightness, then contrast, then saturation factors, each drawn
    uniformly from its range (cofe-Net: 0.7-1.2, 0.6-1.4, 0.6-1.4), clipped after each step as
    torchvision does. Deviation: the contrast pivots on the FOV's mean grey, not the whole frame's
    (see ``_contrast``). Saturation is skipped for images that are not RGB."""
    mask = _fov_mask(image, fov)
    b = _uniform(rng, brightness_range, "brightness_range")
    c = _uniform(rng, contrast_range, "contrast_range")
    s = _uniform(rng, saturation_range, "saturation_range")
    out = _saturation(_contrast(_brightness(image, b), c, mask), s)
    return _in_fov(out, mask), {"brightness": b, "contrast": c, "saturation": s}


def fundus_halo(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    fov: np.ndarray | None = None,
    inner_range: list[float] = (0.75, 1.0),
    outer_range: list[float] = (1.0, 1.5),
    offset: float = 0.125,
    strength: float = 1.0,
    tint_choices: list[int] = (1, 2),
) -> tuple[np.ndarray, dict[str, Any]]:
    """cofe-Net's halo (uneven illumination): a bright ring towards the edge of the FOV.

    Two concentric discs centred within +-``offset`` of the frame centre (fractions of W and H):
    the inner one of diameter min(H, W) * U(inner_range); the outer one, as in cofe-Net, of
    min(H, W) * U(outer_range) + |max(cx - W/2, cy - H/2) + max(H, W) / 2|, which reaches past the
    frame. Their difference (the ring) times the mean of the whole frame and ``strength`` is
    smoothed, tinted and added: the periphery brightens, the centre much less.
    Tints: cofe-Net has three (``HALO_TINTS``) but uses the warm white (index 0) only when the
    colour step's brightness factor is below 0.2, which its ranges never draw; so 1 and 2 by default.
    Deviation: cofe-Net smooths with an OpenCV Gaussian truncated to a kernel as wide as the gap
    between the inner disc and the frame (nearly a box of that width); here a full Gaussian of the
    same spread (sigma = 0.29 x that width) is used.
    """
    mask = _fov_mask(image, fov)
    h, w = image.shape[:2]
    side = min(h, w)
    cx = w / 2 + _uniform(rng, (-offset * w, offset * w), "offset")
    cy = h / 2 + _uniform(rng, (-offset * h, offset * h), "offset")
    inner = side * _uniform(rng, inner_range, "inner_range")
    outer = max(inner, side * _uniform(rng, outer_range, "outer_range") + abs(max(cx - w / 2, cy - h / 2) + max(h, w) / 2))
    tint = int(tint_choices[int(rng.integers(0, len(tint_choices)))])
    mean = float(image.mean())
    ring = (_disc((h, w), cx, cy, outer / 2) & ~_disc((h, w), cx, cy, inner / 2)).astype(np.float32)
    reach = 2 * max(cx, w - cx, cy, h - cy)  # diameter of the circle about the centre that reaches the frame
    sigma = max(0.01 * side, 0.29 * abs(reach - inner))
    light = _smooth(ring, sigma) * np.float32(mean * strength)
    weights = np.array(HALO_TINTS[tint], np.float32) / 255.0 if image.shape[2] == 3 else np.ones(image.shape[2], np.float32)
    out = image + light[..., None] * weights
    params = {"cx": cx, "cy": cy, "inner_diameter": inner, "outer_diameter": outer, "sigma": sigma, "tint": tint, "amount": mean * strength}
    return _in_fov(out, mask), params


def fundus_hole(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    fov: np.ndarray | None = None,
    diameter_range: list[float] = (0.4, 0.7),
    min_mean: float = 0.25,
) -> tuple[np.ndarray, dict[str, Any]]:
    """cofe-Net's dark hole: a heavily blurred dark disc near the centre.

    Diameter d = min(H, W) * U(diameter_range) (cofe-Net: 0.4-0.7 of the width), centre x in
    [W/4, 3W/4], y in [3H/8, 5H/8]; darkened by U(0.26, 0.262) + U(0.05, 0.06) * mean (the mean
    intensity inside the FOV), smoothed by a Gaussian of sigma 0.29 * U(0.55, 0.75) * d (cofe-Net:
    a kernel U(0.55, 0.75) * d wide) and subtracted from every channel. As in cofe-Net, images whose
    FOV mean is at most ``min_mean`` (0.25) get no hole (depth 0): they are dark already.
    """
    mask = _fov_mask(image, fov)
    h, w = image.shape[:2]
    d = min(h, w) * _uniform(rng, diameter_range, "diameter_range")
    cx = float(rng.uniform(w / 4, 3 * w / 4))
    cy = float(rng.uniform(3 * h / 8, 5 * h / 8))
    base = float(rng.uniform(0.26, 0.262))
    frac = float(rng.uniform(0.05, 0.06))
    width = float(rng.uniform(0.55, 0.75)) * d
    mean = _fov_mean(image, mask)
    depth = base + frac * mean if mean > min_mean else 0.0
    sigma = max(1.0, 0.29 * width)
    dark = _smooth(_disc((h, w), cx, cy, d / 2).astype(np.float32), sigma) * np.float32(depth)
    out = image - dark[..., None]
    return _in_fov(out, mask), {"cx": cx, "cy": cy, "diameter": d, "depth": depth, "sigma": sigma}


def fundus_spots(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    fov: np.ndarray | None = None,
    count_range: list[int] = (5, 10),
    size_range: list[float] = (0.01, 0.05),
    reference_size: int = 512,
) -> tuple[np.ndarray, dict[str, Any]]:
    """cofe-Net's bright spots (dust, reflections): ``count`` (5-10) soft bright discs added to
    every channel.

    Each spot's size s = min(H, W) * U(0.01, 0.05) (cofe-Net calls it the radius; the disc it draws
    has radius s / 2, as here). Its brightness follows cofe-Net's scattering formula with
    rho = s / 25 at 512 px: k = 14/25 + 1 - rho, beta = 0.5 + rho, d = 0.3 rho,
    amplitude = k (1 - exp(-beta d)), about 0.07 for the smallest spots and 0.2 for the largest.
    The edge is softened over a width U(1/5, 1/4) * 2 (5 + 20 rho) px at 512 (cofe-Net's truncated
    kernel), as a Gaussian of sigma 0.29 x that width. Deviation: centres are drawn among the FOV
    pixels (cofe-Net draws them anywhere in the frame, so some of its spots are masked away)."""
    mask = _fov_mask(image, fov)
    h, w = image.shape[:2]
    side = min(h, w)
    to_ref = float(reference_size) / side
    n = int(rng.integers(int(count_range[0]), int(count_range[1]) + 1))
    ys, xs = np.nonzero(mask)
    light = np.zeros((h, w), np.float32)
    spots = []
    for _ in range(n):
        size = side * _uniform(rng, size_range, "size_range")
        rho = size * to_ref / 25.0
        amp = (14 / 25 + 1.0 - rho) * (1.0 - math.exp(-(0.5 + rho) * 0.3 * rho))
        width = float(rng.uniform(1 / 5, 1 / 4)) * 2 * (5 + 20 * rho) / to_ref
        soft = max(0.3, 0.29 * width)
        if ys.size:
            i = int(rng.integers(0, ys.size))
            cx, cy = float(xs[i]), float(ys[i])
        else:
            cx, cy = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        # smooth only a window around the spot (disc plus 4 sigma): a full-frame blur per spot is slow
        m = math.ceil(size / 2 + 4 * soft) + 1
        top, bottom = max(0, int(cy) - m), min(h, int(cy) + m + 1)
        left, right = max(0, int(cx) - m), min(w, int(cx) + m + 1)
        patch = _disc((bottom - top, right - left), cx - left, cy - top, size / 2).astype(np.float32)
        light[top:bottom, left:right] += cv2.GaussianBlur(patch, (0, 0), sigmaX=soft, borderType=cv2.BORDER_CONSTANT) * np.float32(amp)
        spots.append([cx, cy, size, amp])
    out = image + light[..., None]
    return _in_fov(out, mask), {"count": n, "spots": spots}


def fundus_blur(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    fov: np.ndarray | None = None,
    sigma_range: list[float] = (5.0, 15.0),
    reference_size: int = 512,
    kernel: str = "full",
) -> tuple[np.ndarray, dict[str, Any]]:
    """cofe-Net's blur: Gaussian with sigma U(5, 15) at 512 x 512, scaled by min(H, W) /
    ``reference_size`` for other resolutions; the whole frame is blurred, then masked to the FOV.

    ``kernel="full"`` (default): a full Gaussian of that sigma (albumentations' kernel), as the
    cofe-Net paper and REFERENCE.md describe it. ``kernel="cofe"``: cofe-Net's code, which
    truncates the Gaussian to a kernel of odd width and height drawn from [sigma/3, sigma/2]
    (1-7 px at 512), i.e. nearly a small box blur and far milder than the full Gaussian; done with
    OpenCV directly since albumentations takes one size for both axes.
    Apply it to whole images: on a patch the scaling with min(H, W) is meaningless."""
    if kernel not in ("full", "cofe"):
        raise ValueError(f"kernel must be 'full' or 'cofe', not {kernel!r}")
    mask = _fov_mask(image, fov)
    base = _uniform(rng, sigma_range, "sigma_range")
    sigma = base * min(image.shape[:2]) / float(reference_size)
    if kernel == "full":
        return _in_fov(_gaussian_blur(image, sigma), mask), {"sigma_at_reference": base, "sigma": sigma}
    sizes = []
    for _ in range(2):
        k = int(rng.integers(int(sigma / 3), int(sigma / 2) + 1))
        sizes.append(k + 1 - k % 2)
    kw, kh = sizes
    out = cv2.GaussianBlur(np.ascontiguousarray(image, dtype=np.float32), (kw, kh), sigmaX=sigma, sigmaY=sigma)
    out = out.reshape(image.shape)
    return _in_fov(out, mask), {"sigma_at_reference": base, "sigma": sigma, "kernel_w": kw, "kernel_h": kh}


def cataract_haze(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    fov: np.ndarray | None = None,
    offset: float = 0.3,
    kernel_choices: list[int] = (1, 3, 5, 7),
    haze_range: list[float] = (0.6, 0.8),
    attenuation: float = 0.8,
    contrast_range: list[float] = (0.9, 1.3),
    brightness_range: list[float] = (0.9, 1.0),
    saturation_range: list[float] = (0.9, 1.3),
    reference_size: int = 512,
) -> tuple[np.ndarray, dict[str, Any]]:
    """ArcNet-style cataract simulation (Li et al., annotation-free restoration of cataractous
    fundus images).

    1. Blur: a box of side k drawn from ``kernel_choices`` at 512 px (ArcNet: OpenCV's Gaussian
       with sigma 10-30 on a 1-7 px kernel, i.e. nearly a box), scaled with min(H, W).
    2. Haze map: distance from a random centre within +-``offset`` of the frame centre, divided by
       its maximum inside the FOV (0 at the centre, 1 at the farthest FOV pixel).
    3. out = attenuation * blurred + U(haze_range) * map * (channel max - blurred), the channel max
       taken inside the FOV: a veil that pulls every channel towards its brightest value.
    4. Jitter: contrast U(0.9, 1.3), brightness U(0.9, 1.0), saturation U(0.9, 1.3), in ArcNet's
       order (contrast pivot: FOV mean, see ``_contrast``).
    """
    mask = _fov_mask(image, fov)
    h, w = image.shape[:2]
    side = min(h, w)
    cx = w / 2 + _uniform(rng, (-offset * w, offset * w), "offset")
    cy = h / 2 + _uniform(rng, (-offset * h, offset * h), "offset")
    k512 = int(kernel_choices[int(rng.integers(0, len(kernel_choices)))])
    ratio = _uniform(rng, haze_range, "haze_range")
    c = _uniform(rng, contrast_range, "contrast_range")
    b = _uniform(rng, brightness_range, "brightness_range")
    s = _uniform(rng, saturation_range, "saturation_range")

    k = max(1, round(k512 * side / float(reference_size)))
    k += 1 - k % 2
    blur, _ = _alb()
    blurred = np.asarray(blur.box_blur(np.ascontiguousarray(image, dtype=np.float32), k), dtype=np.float32).reshape(image.shape)
    yy, xx = np.ogrid[:h, :w]
    dist = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2).astype(np.float32) * mask
    far = float(dist.max())
    haze = dist / far if far > 0 else dist
    top = blurred[mask].max(axis=0) if mask.any() else np.ones(image.shape[2], np.float32)
    out = np.float32(attenuation) * blurred + np.float32(ratio) * haze[..., None] * (top - blurred)
    out = np.clip(out, 0.0, 1.0)
    out = _saturation(_brightness(_contrast(out, c, mask), b), s)
    params = {"cx": cx, "cy": cy, "kernel_at_reference": k512, "kernel": k, "haze": ratio, "contrast": c, "brightness": b, "saturation": s}
    return _in_fov(out, mask), params


# ---------------------------------------------------------------------------------------------
# composition
# ---------------------------------------------------------------------------------------------


def _accepts_fov(fn: Callable) -> bool:
    return "fov" in inspect.signature(fn).parameters


def apply_spec(
    image: np.ndarray, spec: dict[str, Any], rng: np.random.Generator, fov: np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Apply one spec to a float image with a given rng (``corrupt`` without the uint8 round trip).

    The image is taken as float32 (H x W x C, values in [0, 1]); the result is float32, unclipped."""
    kwargs = dict(spec)
    kind = kwargs.pop("kind", None)
    if kind not in DEGRADATIONS:
        raise ValueError(f"unknown corruption kind {kind!r}; known: {', '.join(DEGRADATIONS)}")
    fn = DEGRADATIONS[kind]
    if _accepts_fov(fn):
        kwargs["fov"] = fov
    out, params = fn(np.asarray(image, dtype=np.float32), rng, **kwargs)
    return np.asarray(out, dtype=np.float32), params


def _shrink_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A FOV mask brought to a downscaled image's size (modcrop, block mean, 0.5 threshold)."""
    sy, sx = mask.shape[0] // shape[0], mask.shape[1] // shape[1]
    crop = mask[: shape[0] * sy, : shape[1] * sx].astype(np.float32)
    return crop.reshape(shape[0], sy, shape[1], sx).mean(axis=(1, 3)) >= 0.5


def chain(
    image: np.ndarray, rng: np.random.Generator, *, steps: list[dict[str, Any]], fov: np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Apply ``steps`` (specs) in order with the one rng; params ``{"steps": [params, ...]}``.

    Values are not clipped between steps except where a step clips itself (the fundus ones). When a
    step shrinks the image (downscaling) the FOV mask is shrunk to match for later steps."""
    out = image
    mask = fov
    records = []
    for step in steps:
        prev_shape = out.shape[:2]
        out, params = apply_spec(out, step, rng, mask)
        if mask is not None and out.shape[:2] != prev_shape:
            mask = _shrink_mask(np.asarray(mask, bool), out.shape[:2])
        records.append(params)
    return out, {"steps": records}


FUNDUS_GROUPS = {"illumination": ("colour", "halo", "hole"), "spots": ("spots",), "blur": ("blur",)}


def fundus_random(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    fov: np.ndarray | None = None,
    probabilities: dict[str, float] | None = None,
    at_least_one: bool = True,
    options: dict[str, dict[str, Any]] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """cofe-Net's random mixture of its three degradation factors, in its order:
    illumination (colour, then halo, then hole), spots, blur.

    Each factor is applied with its probability (``probabilities``, default 0.5 each). With
    ``at_least_one`` the draw is repeated until a factor is chosen, so by default each of the
    7 non-empty combinations (cofe-Net's types 001 ... 111) is equally likely. ``options`` passes
    keys to a component, e.g. ``{"blur": {"kernel": "cofe"}, "halo": {"strength": 0.5}}``. For any
    other combination of the fundus kinds use ``chain``.
    Params: ``{"groups": [names], "steps": [{"kind": ..., **params}, ...]}``."""
    probs = {name: 0.5 for name in FUNDUS_GROUPS}
    for name, value in (probabilities or {}).items():
        if name not in probs:
            raise ValueError(f"fundus_random: unknown factor {name!r}; known: {', '.join(FUNDUS_GROUPS)}")
        probs[name] = _check_probability(f"probabilities[{name}]", float(value))
    options = options or {}
    components = [c for group in FUNDUS_GROUPS.values() for c in group]
    for name in options:
        if name not in components:
            raise ValueError(f"fundus_random: unknown component {name!r} in options; known: {', '.join(components)}")
    if at_least_one and not any(p > 0 for p in probs.values()):
        raise ValueError("fundus_random: at_least_one needs a positive probability")
    while True:
        u = rng.random(len(FUNDUS_GROUPS))
        chosen = [name for name, x in zip(FUNDUS_GROUPS, u, strict=True) if x < probs[name]]
        if chosen or not at_least_one:
            break
    out = image
    steps = []
    for group in chosen:
        for name in FUNDUS_GROUPS[group]:
            out, params = apply_spec(out, {"kind": f"fundus_{name}", **options.get(name, {})}, rng, fov)
            steps.append({"kind": f"fundus_{name}", **params})
    if not steps:  # nothing drawn (at_least_one=False): still the masked image, like every fundus kind
        out = _in_fov(image, _fov_mask(image, fov))
    return out, {"groups": chosen, "steps": steps}


DEGRADATIONS: dict[str, Degradation] = {
    "gaussian": gaussian_noise,
    "poisson": poisson_noise,
    "gaussian_proportion": gaussian_proportion,
    "poisson_proportion": poisson_proportion,
    "salt_pepper": salt_pepper,
    "speckle": speckle_noise,
    "gaussian_blur": gaussian_blur,
    "defocus_blur": defocus_blur,
    "motion_blur": motion_blur,
    "jpeg": jpeg_compression,
    "downscale": downscale,
    "blur_downscale": blur_downscale,
    "fundus_colour": fundus_colour,
    "fundus_halo": fundus_halo,
    "fundus_hole": fundus_hole,
    "fundus_spots": fundus_spots,
    "fundus_blur": fundus_blur,
    "cataract": cataract_haze,
    "chain": chain,
    "fundus_random": fundus_random,
}


# ---------------------------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------------------------


def stable_id(text: str) -> int:
    """A 32-bit integer from a name, identical on every machine and Python run."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def to_float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / np.float32(255.0)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def spec_scale(spec: dict[str, Any]) -> int:
    """How many times smaller than its input a spec's output is (1 for all but the SR kinds)."""
    kind = spec.get("kind")
    if kind in ("downscale", "blur_downscale"):
        return int(spec["scale"])
    if kind == "chain":
        return math.prod(spec_scale(step) for step in spec["steps"])
    return 1


def corrupt(
    image: np.ndarray, spec: dict[str, Any], seed_words: list[int], fov: np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Apply ``spec`` (``{"kind": name, **kwargs}``) to a uint8 image; return uint8 and the sampled params.

    ``image`` is H x W x C or H x W (returned in the same layout). ``fov`` (bool H x W) goes to the
    corruptions that take one; the others ignore it. The SR kinds return a smaller image."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"corrupt() takes uint8 images, got {image.dtype}")
    if image.ndim not in (2, 3):
        raise ValueError(f"corrupt() takes H x W or H x W x C images, got shape {image.shape}")
    flat = image.ndim == 2
    x = to_float(image[..., None] if flat else image)
    mask = None if fov is None else _fov_mask(x, fov)
    rng = np.random.default_rng(seed_words)
    degraded, params = apply_spec(x, spec, rng, mask)
    out = to_uint8(degraded)
    return (out[..., 0] if flat else out), params


def sr_pair(
    image: np.ndarray, spec: dict[str, Any], seed_words: list[int], fov: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(hr, lr, params)`` for a super-resolution spec: ``lr`` from :func:`corrupt`, ``hr`` the
    top-left crop of ``image`` that ``lr`` is exactly ``spec_scale(spec)`` times smaller than."""
    lr, params = corrupt(image, spec, seed_words, fov)
    s = spec_scale(spec)
    hr = np.asarray(image)[: lr.shape[0] * s, : lr.shape[1] * s]
    return hr, lr, params
