"""Seeded, replayable corruptions.

Every corruption is a function ``f(image, rng, **spec) -> (degraded, params)`` on float images in
[0, 1] (H x W x C). ``rng`` is a ``numpy.random.Generator`` built from a list of seed words; the
sampled parameters are returned so they can be saved beside the output. Calling
:func:`corrupt` again with the same image, spec and seed words replays the corruption exactly.

Results are clipped to [0, 1] and quantised to 8 bits, as an acquired image would be (seed 004).
Sigmas are on the 0-255 scale, as in the papers.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable

import numpy as np

Degradation = Callable[..., tuple[np.ndarray, dict[str, Any]]]


def gaussian_noise(
    image: np.ndarray, rng: np.random.Generator, *, sigma: float | None = None, sigma_range: list[float] | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Additive white Gaussian noise on every channel.

    ``sigma`` fixed (seed 000: 25), or drawn uniformly from ``sigma_range`` per call (seed 004's
    blind setting: [0, 50]). Both on the 0-255 scale.
    """
    if (sigma is None) == (sigma_range is None):
        raise ValueError("gaussian noise needs exactly one of sigma or sigma_range")
    s = float(sigma) if sigma is not None else float(rng.uniform(sigma_range[0], sigma_range[1]))
    noisy = image + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(s / 255.0)
    return noisy, {"sigma": s}


DEGRADATIONS: dict[str, Degradation] = {
    "gaussian": gaussian_noise,
}


def stable_id(text: str) -> int:
    """A 32-bit integer from a name, identical on every machine and Python run."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def to_float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / np.float32(255.0)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def corrupt(image: np.ndarray, spec: dict[str, Any], seed_words: list[int]) -> tuple[np.ndarray, dict[str, Any]]:
    """Apply ``spec`` (``{"kind": name, **kwargs}``) to a uint8 image; return uint8 and the sampled params."""
    spec = dict(spec)
    kind = spec.pop("kind")
    if kind not in DEGRADATIONS:
        raise ValueError(f"unknown corruption kind {kind!r}; known: {', '.join(DEGRADATIONS)}")
    rng = np.random.default_rng(seed_words)
    degraded, params = DEGRADATIONS[kind](to_float(image), rng, **spec)
    return to_uint8(degraded), params
