"""Fundus-photograph degradations: cofe-Net's factors and ArcNet's cataract.

cofe-Net (Shen et al. 2020, "Modeling and enhancing low-quality retinal fundus images") degrades
good photographs with three factors: illumination (colour, then halo, then hole), spots, and blur;
``fundus_random`` (:mod:`medrestore.degradations.compose`) draws its random subset of them. ArcNet
(Li et al., annotation-free restoration of cataractous fundus images) simulates a cataract as a blur
plus a veil that grows away from a random centre. Inside the FOV mask (the whole frame without
one), each result is clipped and multiplied by the mask, as cofe-Net does. Kinds and defaults:

``fundus_colour``  brightness_range=[0.7, 1.2], contrast_range=[0.6, 1.4], saturation_range=[0.6, 1.4]
``fundus_halo``    inner_range=[0.75, 1.0], outer_range=[1.0, 1.5], offset=0.125, strength=1.0,
                   tint_choices=[1, 2]
``fundus_hole``    diameter_range=[0.4, 0.7], min_mean=0.25
``fundus_spots``   count_range=[5, 10], size_range=[0.01, 0.05], reference_size=512
``fundus_blur``    sigma_range=[5, 15] (at reference_size=512; scaled with min(H, W)),
                   kernel="full" | "cofe"
``cataract``       offset=0.3, kernel_choices=[1, 3, 5, 7], haze_range=[0.6, 0.8], attenuation=0.8,
                   contrast_range=[0.9, 1.3], brightness_range=[0.9, 1.0], saturation_range=[0.9, 1.3]

Sizes are fractions of min(H, W) or pixels at cofe-Net's 512 px (``reference_size``), so whole
photographs of any resolution degrade alike; apply these to whole images, not patches.

Deliberate deviations, each detailed in its function: the contrast pivots on the FOV's mean grey,
not the whole frame's (:func:`_contrast`); the halo is smoothed by a full Gaussian instead of
cofe-Net's truncated kernel and its tints skip the warm white its ranges never select; spot
centres are drawn inside the FOV; ``fundus_blur`` uses the paper's full Gaussian unless
``kernel="cofe"`` asks for the code's truncated one. The ``sigma`` that ``fundus_halo`` and
``fundus_hole`` record is the smoothing of their light maps; only ``fundus_blur``'s is a blur of the image.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from medrestore.degradations import exact
from medrestore.degradations.blur import _gaussian_blur
from medrestore.degradations.core import _fov_mask, _in_fov, _uniform

# Every filter, resize and grey conversion here is one of medrestore.degradations.exact: float64
# arithmetic that does not depend on the CPU's vector unit, so the enhance task's data are the same
# bytes on every x86-64 machine (OpenCV's float filters were not). Grey levels: ITU-R BT.601 luma.


# ---------------------------------------------------------------------------------------------
# shared image operations
# ---------------------------------------------------------------------------------------------


def _grey(image: np.ndarray) -> np.ndarray:
    if image.shape[2] == 3:
        return exact.luma(image)
    return np.asarray(image, dtype=np.float64).mean(axis=2)


def _fov_mean(image: np.ndarray, fov: np.ndarray) -> float:
    return exact.mean(image[fov]) if fov.any() else 0.0


def _smooth(field: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of a 2-D map (illumination, haze). Large sigmas are done on a map
    shrunk by area averaging and brought back bilinearly: the map is smooth at that scale, and a
    full-resolution kernel of several hundred taps takes seconds per image. Borders: reflected
    (``fedcba|abcdef``)."""
    field = field.astype(np.float32)
    if sigma <= 0:
        return field
    h, w = field.shape
    factor = int(sigma // 8)
    if factor >= 2 and min(h, w) // factor >= 8:
        small = exact.shrink_area(field, factor)
        small = exact.gaussian_blur(small, sigma / factor, border="reflect")
        return exact.resize_linear(small, w, h)
    return exact.gaussian_blur(field, sigma, border="reflect")


def _disc(shape: tuple[int, int], cx: float, cy: float, radius: float) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return ((xx - cx) ** 2 + (yy - cy) ** 2) <= radius**2


def _contrast(image: np.ndarray, factor: float, fov: np.ndarray) -> np.ndarray:
    """Contrast about the mean grey level inside the FOV.

    torchvision and PIL pivot on the mean of the whole frame; for a fundus photograph that mean
    includes the black surround, so the result would depend on how much border a crop keeps. The
    pivot here is the FOV's mean (a deliberate deviation from cofe-Net/ArcNet)."""
    mean = _fov_mean(_grey(image), fov)
    return np.clip(mean + factor * (np.asarray(image, dtype=np.float64) - mean), 0.0, 1.0).astype(np.float32)


def _brightness(image: np.ndarray, factor: float) -> np.ndarray:
    """torchvision's brightness (the image times ``factor``), as albumentations' float version."""
    return np.clip(np.asarray(image, dtype=np.float64) * factor, 0.0, 1.0).astype(np.float32)


def _saturation(image: np.ndarray, factor: float) -> np.ndarray:
    """torchvision's saturation (a blend with the grey image; RGB only), as albumentations' float
    version: ``factor * image + (1 - factor) * grey``, clipped."""
    if image.shape[2] != 3:
        return image
    grey = exact.luma(image)[..., None]
    return np.clip(np.asarray(image, dtype=np.float64) * factor + grey * (1.0 - factor), 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# the degradations
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
    outer = max(inner,
                side * _uniform(rng, outer_range, "outer_range") + abs(max(cx - w / 2, cy - h / 2) + max(h, w) / 2))
    tint = int(tint_choices[int(rng.integers(0, len(tint_choices)))])
    mean = float(image.mean())
    ring = (_disc((h, w), cx, cy, outer / 2) & ~_disc((h, w), cx, cy, inner / 2)).astype(np.float32)
    reach = 2 * max(cx, w - cx, cy, h - cy)  # diameter of the circle about the centre that reaches the frame
    sigma = max(0.01 * side, 0.29 * abs(reach - inner))
    light = _smooth(ring, sigma) * np.float32(mean * strength)
    weights = np.array(HALO_TINTS[tint],
                       np.float32) / 255.0 if image.shape[2] == 3 else np.ones(image.shape[2], np.float32)
    out = image + light[..., None] * weights
    params = {"cx": cx, "cy": cy, "inner_diameter": inner, "outer_diameter": outer, "sigma": sigma, "tint": tint,
              "amount": mean * strength}
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
        light[top:bottom, left:right] += exact.gaussian_blur(patch, soft, border="constant") * np.float32(amp)
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
    a kernel per axis (albumentations takes one size for both).
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
    out = exact.gaussian_blur(image, sigma, size=(kw, kh)).reshape(image.shape)
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
    blurred = exact.box_blur(image, k).reshape(image.shape)
    yy, xx = np.ogrid[:h, :w]
    dist = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2).astype(np.float32) * mask
    far = float(dist.max())
    haze = dist / far if far > 0 else dist
    top = blurred[mask].max(axis=0) if mask.any() else np.ones(image.shape[2], np.float32)
    out = np.float32(attenuation) * blurred + np.float32(ratio) * haze[..., None] * (top - blurred)
    out = np.clip(out, 0.0, 1.0)
    out = _saturation(_brightness(_contrast(out, c, mask), b), s)
    params = {"cx": cx, "cy": cy, "kernel_at_reference": k512, "kernel": k, "haze": ratio, "contrast": c,
              "brightness": b, "saturation": s}
    return _in_fov(out, mask), params

