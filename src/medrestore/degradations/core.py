"""What every corruption shares: its signature, the parameter draws, the FOV mask and 8-bit values.

A corruption is ``f(image, rng, **spec) -> (degraded, params)`` (:data:`Degradation`) on float32
images in [0, 1] (H x W x C). A spec key ``x`` or ``x_range`` gives exactly one of a fixed value or a
``[low, high]`` range drawn uniformly per call (:func:`_draw`, :func:`_draw_int`); every draw comes
from ``rng`` in the order the corruption makes it, which is what makes a corruption replayable.
The fundus kinds work inside a field-of-view mask (:func:`_fov_mask`, :func:`_in_fov`).
albumentations' functional modules are imported on first use (:func:`_alb`): the import takes seconds.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

Degradation = Callable[..., tuple[np.ndarray, dict[str, Any]]]


@functools.cache
def _alb():
    """albumentations' functional modules, imported on first use (the import takes seconds)."""
    from albumentations.augmentations.blur import functional as blur
    from albumentations.augmentations.pixel import functional as pixel

    return blur, pixel


# ---------------------------------------------------------------------------------------------
# parameter draws
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


# ---------------------------------------------------------------------------------------------
# the FOV mask and 8-bit values
# ---------------------------------------------------------------------------------------------


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


def to_float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / np.float32(255.0)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)

