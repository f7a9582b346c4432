"""Noise: additive, photon-count, impulse and multiplicative, all drawn from the corruption's rng.

Sigmas are standard deviations on the 0-255 scale, as in the papers (an image in [0, 1] gets
N(0, sigma / 255)). Kinds (``x | x_range``: a fixed value or a ``[low, high]`` range drawn per call):

``gaussian``            sigma | sigma_range: additive white Gaussian noise on every channel.
                        Hayee2017 uses sigma 25; GilZuluaga2021's blind setting draws it from [0, 50].
``poisson``             peak | peak_range: photon-count noise, counts ~ Poisson(x * peak) / peak
                        (the physical model; not albumentations' gamma-linearised ``shot_noise``).
``gaussian_proportion`` p | p_range, sigma | sigma_range: Gondara2016's Gaussian noise on a random
                        proportion p of the pixels (the text's reading; its Table IV SSIMs fit a
                        "noise factor" reading at least as well, see the function).
``poisson_proportion``  p | p_range, lam | lam_range, count=255: Gondara2016's additive
                        Poisson(lambda) counts on a proportion p of the pixels, taken literally.
``salt_pepper``         amount | amount_range, salt_ratio=0.5: impulse noise.
``speckle``             sigma | sigma_range: multiplicative, x + x * N(0, sigma / 255) (numpy:
                        albumentations' MultiplicativeNoise draws a uniform multiplier).

The kinds whose recorded ``sigma`` is a noise level are :data:`NOISE_SIGMA_KINDS`
(:func:`medrestore.degradations.noise_sigma` reads them; blur sigmas are pixels, not noise).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medrestore.degradations.core import _alb, _check_probability, _draw

# Kinds whose params' "sigma" is a noise standard deviation on the 0-255 scale.
NOISE_SIGMA_KINDS = frozenset({"gaussian", "gaussian_proportion", "speckle"})


def _pixel_mask(rng: np.random.Generator, shape: tuple[int, ...], p: float) -> np.ndarray:
    """Each pixel (all its channels together) chosen independently with probability ``p``."""
    return rng.random(shape[:2]) < p


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

