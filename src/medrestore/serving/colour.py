"""The colour range a model was trained on, and the check of an input against it.

A restoration network learns the colour statistics of its training targets (CHASE_DB1's nearly
black blue channel, for one) and may paint them onto photographs of other cameras. The trainer
records, per channel, the mean and the 5th / 95th percentiles of the patch means of its training
targets (:func:`colour_statistics`, ``model.json``'s ``colour``); ``medrestore restore`` compares the
channel means of each input inside its FOV with them (:func:`colour_warnings`).
"""

from __future__ import annotations

import numpy as np

CHANNELS = ("red", "green", "blue")
MARGIN_FRACTION = 0.5  # the training range [p5, p95] widened by half its width on each side ...
MARGIN_MIN = 12.0  # ... and by at least this many grey levels (0-255)


def _measured(image: np.ndarray, fov: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of the pixels to measure: ``fov`` when given and not empty, else the pixels that
    are not black surround (any channel above 10)."""
    if fov is not None and np.any(fov):
        return np.asarray(fov, dtype=bool)
    mask = image.max(axis=-1) > 10
    return mask if mask.any() else np.ones(image.shape[:2], dtype=bool)


def fov_channel_means(image: np.ndarray, fov: np.ndarray | None = None) -> np.ndarray:
    """Mean of each channel (0-255) of an (H, W, 3) uint8 image over its FOV pixels."""
    return image[_measured(image, fov)].astype(np.float64).mean(axis=0)


def colour_statistics(patches: np.ndarray, rows: np.ndarray | None = None, limit: int = 4096) -> dict:
    """Per channel the mean and the 5th / 95th percentiles of the patch means (0-255) of (N, P, P, 3)
    uint8 training targets (only ``rows`` of them when given), each patch measured over its pixels that
    are not black surround. At most ``limit`` evenly spaced patches are read (deterministic). Empty for
    non-RGB or no patches."""
    rows = np.arange(len(patches)) if rows is None else np.asarray(rows, dtype=np.int64)
    n = len(rows)
    if n == 0 or np.asarray(patches[rows[0]]).ndim != 3 or np.asarray(patches[rows[0]]).shape[-1] != 3:
        return {}
    rows = rows[np.unique(np.linspace(0, n - 1, min(n, limit)).round().astype(np.int64))]
    means = np.stack([fov_channel_means(np.asarray(patches[i])) for i in rows])
    out: dict = {"patches": len(rows), "measure": "per-patch channel means over the pixels inside the FOV, 0-255"}
    for k, c in enumerate(CHANNELS):
        out[c] = {"mean": round(float(means[:, k].mean()), 3), "p5": round(float(np.percentile(means[:, k], 5)), 3),
                  "p95": round(float(np.percentile(means[:, k], 95)), 3)}
    return out


def allowed_range(stats: dict) -> tuple[float, float]:
    """The range of channel means a model is trusted on: its [p5, p95] widened by the margin."""
    lo, hi = float(stats["p5"]), float(stats["p95"])
    margin = max(MARGIN_MIN, MARGIN_FRACTION * (hi - lo))
    return lo - margin, hi + margin


def colour_warnings(image: np.ndarray, fov: np.ndarray | None, colour: dict | None, name: str) -> list[str]:
    """One line (or none) naming every channel whose mean inside the FOV of ``image`` lies outside the
    model's widened training range (``colour``: :func:`colour_statistics` of its targets); empty when
    the model has no colour record or the image is not RGB."""
    if not colour or image.ndim != 3 or image.shape[-1] != 3:
        return []
    means = fov_channel_means(image, fov)
    outside = []
    for k, c in enumerate(CHANNELS):
        if c not in colour:
            continue
        lo, hi = allowed_range(colour[c])
        if not lo <= means[k] <= hi:
            outside.append(f"{c} channel mean {means[k]:.1f} (training range "
                           f"{colour[c]['p5']:.1f}-{colour[c]['p95']:.1f})")
    if not outside:
        return []
    return [f"warning: {name}: inside the FOV, {', '.join(outside)} is far outside the colours the model was trained "
            "on (5th-95th percentile of its training patches' channel means): the output may be unreliable."]
