"""Colour of fundus photographs: per-channel statistics inside the FOV, the photometric augmentation
of training targets, and the recolouring of whole images to another camera's channel profile.

Cameras differ in per-channel gain, tone curve and spectral response: CHASE_DB1's blue channel is
nearly black (mean about 10 inside the FOV), other cameras' blue has content (means up to about 60)
and their green is brighter. One transform covers both uses, per channel c on values in [0, 255]::

    curved_c = 255 * (x_c / 255) ** gamma_c
    out_c = clip(gain_c * curved_c + leak_c * curved_green, 0, 255)

A channel is gained on its own at most ``own_gain_max`` (2 by default); the rest of its target mean
comes from the green channel (``leak_c``, 0 for green itself), as a camera whose blue filter passes
more of the light CHASE_DB1's camera records as green. Gaining CHASE_DB1's blue channel alone to a
mean of 60 (x6 to x16) would turn its sensor noise and JPEG blocks into "clean" texture (noise
sigma 2-10 by ``skimage.restoration.estimate_sigma``, where a real photograph's blue has about 1):
a denoiser trained or scored on such targets learns to keep noise in blue.

``augment_patch`` draws ``gamma_c`` (log-uniform in ``gamma_range``) and a target mean ``t_c``
(uniform in ``mean_range[c]``) from the patch's seed words, then sets ``gain_c`` and ``leak_c`` so
that the channel mean over the patch's FOV pixels becomes ``t_c`` (gains limited to ``gain_limits``).
``recolour`` does the same for a whole image with a fixed target profile. Both return the parameters
they used, so the transform can be replayed.

Not albumentations (2.0): its ``RandomGamma`` draws one gamma for all channels, ``MultiplicativeNoise``
(``per_channel``) draws gains from a fixed range rather than toward target channel means, and both draw
from albumentations' own generator rather than from the project's per-patch seed words.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medrestore.core.io import InputError

CHANNELS = ("red", "green", "blue")
GREEN = 1  # the channel other channels borrow from when their own gain would exceed own_gain_max
GAIN_LIMITS = (0.2, 8.0)  # a channel's own gain
OWN_GAIN_MAX = 2.0  # above it, the rest of a channel's target mean comes from green (leak)
# Channel means inside the FOV (0-255) of other cameras than CHASE_DB1's, spanning the published
# fundus datasets' range (blue 30-60, green 80-120): the recoloured test images of the external evaluation.
PROFILES: dict[str, dict[str, float]] = {
    "warm": {"red": 170.0, "green": 80.0, "blue": 30.0},
    "neutral": {"red": 150.0, "green": 95.0, "blue": 45.0},
    "bright": {"red": 185.0, "green": 120.0, "blue": 60.0},
    "cool": {"red": 130.0, "green": 100.0, "blue": 55.0},
}
PHOTOMETRIC_KEYS = {"p", "mean_range", "gamma_range", "gain_limits", "own_gain_max"}


def _fov_pixels(image: np.ndarray, fov: np.ndarray | None) -> np.ndarray:
    """Boolean mask of the pixels to measure: the FOV when given (and not empty), else pixels that
    are not black surround (any channel above 10)."""
    if fov is not None:
        mask = np.asarray(fov, dtype=bool)
        if mask.any():
            return mask
    mask = image.max(axis=-1) > 10
    return mask if mask.any() else np.ones(image.shape[:2], dtype=bool)


def channel_means(image: np.ndarray, fov: np.ndarray | None = None) -> np.ndarray:
    """Mean of each channel (0-255) over the FOV pixels of an (H, W, 3) uint8 image."""
    mask = _fov_pixels(image, fov)
    return image[mask].astype(np.float64).mean(axis=0)


def curve(image: np.ndarray, gamma) -> np.ndarray:
    """``255 * (x / 255) ** gamma`` per channel, float64."""
    return 255.0 * np.power(image.astype(np.float64) / 255.0, np.asarray(gamma, np.float64))


def apply_colour(image: np.ndarray, gain, gamma, leak=(0.0, 0.0, 0.0)) -> np.ndarray:
    """``clip(gain_c * curved_c + leak_c * curved_green)`` per channel (see the module's docstring),
    rounded to uint8."""
    curved = curve(image, gamma)
    out = np.asarray(gain, np.float64) * curved + np.asarray(leak, np.float64) * curved[..., GREEN:GREEN + 1]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _gains_for(image: np.ndarray, mask: np.ndarray, gamma: np.ndarray, target: np.ndarray, limits,
               own_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Own gains (within ``limits``, at most ``own_max`` but for green) and green leaks that bring the
    channel means inside ``mask`` to ``target``."""
    means = np.maximum(curve(image[mask], gamma).mean(axis=0), 1e-3)
    gain = np.clip(target / means, *limits)
    leak = np.zeros(3)
    for c in range(3):
        if c != GREEN and gain[c] > own_max:
            gain[c] = max(own_max, limits[0])
            leak[c] = max(0.0, float(target[c] - gain[c] * means[c])) / means[GREEN]
    return gain, leak


def check_photometric(task: str, spec: Any) -> dict:
    """The ``photometric`` spec of a task with its defaults, or an :class:`InputError` naming the entry."""
    where = f"params.yaml: corrupt.tasks.{task}.photometric"
    if not isinstance(spec, dict):
        raise InputError(f"{where} is {spec!r}. Fix: give a mapping "
                         "{p, mean_range: {red, green, blue}, gamma_range}.")
    unknown = set(spec) - PHOTOMETRIC_KEYS
    if unknown:
        raise InputError(f"{where}: unknown keys {sorted(unknown)}. Fix: use only {sorted(PHOTOMETRIC_KEYS)}.")
    ranges = spec.get("mean_range")
    if not isinstance(ranges, dict) or set(ranges) != set(CHANNELS):
        raise InputError(f"{where}.mean_range is {ranges!r}. Fix: give [low, high] (0-255) for each of red, green, "
                         "blue.")
    out = {"p": float(spec.get("p", 1.0)), "gamma_range": spec.get("gamma_range", [1.0, 1.0]),
           "gain_limits": spec.get("gain_limits", list(GAIN_LIMITS)),
           "own_gain_max": spec.get("own_gain_max", OWN_GAIN_MAX), "mean_range": {}}
    for c in CHANNELS:
        lo_hi = ranges[c]
        pair = isinstance(lo_hi, (list, tuple)) and len(lo_hi) == 2
        if not (pair and 0 <= float(lo_hi[0]) <= float(lo_hi[1]) <= 255):
            raise InputError(f"{where}.mean_range.{c} is {lo_hi!r}. Fix: give [low, high] with 0 <= low <= high <= "
                             "255.")
        out["mean_range"][c] = [float(lo_hi[0]), float(lo_hi[1])]
    for key in ("gamma_range", "gain_limits"):
        lo_hi = out[key]
        if not (isinstance(lo_hi, (list, tuple)) and len(lo_hi) == 2 and 0 < float(lo_hi[0]) <= float(lo_hi[1])):
            raise InputError(f"{where}.{key} is {lo_hi!r}. Fix: give [low, high] with 0 < low <= high.")
        out[key] = [float(lo_hi[0]), float(lo_hi[1])]
    if not isinstance(out["own_gain_max"], (int, float)) or not out["own_gain_max"] > 0:
        raise InputError(f"{where}.own_gain_max is {out['own_gain_max']!r}. Fix: a positive number (e.g. 2.0).")
    out["own_gain_max"] = float(out["own_gain_max"])
    if not 0.0 <= out["p"] <= 1.0:
        raise InputError(f"{where}.p is {out['p']}. Fix: a probability in [0, 1].")
    return out


def augment_patch(patch: np.ndarray, spec: dict, words: list[int],
                  fov: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """One clean (P, P, 3) uint8 patch with its channel gains and gammas drawn from ``words``
    (``spec``: :func:`check_photometric`'s output). With probability ``1 - p`` the patch is returned
    unchanged (params ``{"applied": False}``)."""
    rng = np.random.default_rng([int(w) for w in words])
    draws = rng.random(7)  # always seven draws: the stream does not depend on p
    if draws[0] >= spec["p"]:
        return patch, {"applied": False}
    g_lo, g_hi = np.log(spec["gamma_range"])
    gamma = np.exp(g_lo + (g_hi - g_lo) * draws[1:4])
    lo = np.array([spec["mean_range"][c][0] for c in CHANNELS])
    hi = np.array([spec["mean_range"][c][1] for c in CHANNELS])
    target = lo + (hi - lo) * draws[4:7]
    gain, leak = _gains_for(patch, _fov_pixels(patch, fov), gamma, target, spec["gain_limits"],
                            spec.get("own_gain_max", OWN_GAIN_MAX))
    out = apply_colour(patch, gain, gamma, leak)
    return out, {"applied": True, "gamma": [round(float(v), 6) for v in gamma],
                 "gain": [round(float(v), 6) for v in gain],
                 "leak": [round(float(v), 6) for v in leak], "target_mean": [round(float(v), 4) for v in target]}


def recolour(image: np.ndarray, fov: np.ndarray, profile: dict[str, float],
             gamma=(1.0, 1.0, 1.0)) -> tuple[np.ndarray, dict]:
    """An (H, W, 3) uint8 fundus image recoloured to another camera's channel statistics.

    Deterministic (no randomness): per channel a fixed ``gamma``, then the own gain (within
    :data:`GAIN_LIMITS`, at most :data:`OWN_GAIN_MAX`) and green leak that make the channel mean
    inside ``fov`` equal ``profile[channel]`` (0-255; see :data:`PROFILES`); the surround outside the
    FOV stays black. Returns the image and ``{"gain", "leak", "gamma", "target_mean"}``. The means hit
    their targets up to rounding and clipping at 255."""
    mask = np.asarray(fov, dtype=bool)
    if not mask.any():
        raise InputError("recolour: the FOV mask is empty. Fix: pass the image's FOV mask.")
    gamma = np.asarray(gamma, np.float64)
    target = np.array([float(profile[c]) for c in CHANNELS])
    gain, leak = _gains_for(image, mask, gamma, target, GAIN_LIMITS, OWN_GAIN_MAX)
    # clipping at 255 lowers the mean: a few fixed-point steps on gain and leak make up for it
    for _ in range(4):
        got = apply_colour(image, gain, gamma, leak)[mask].astype(np.float64).mean(axis=0)
        factor = target / np.maximum(got, 1e-3)
        borrows = leak > 0  # a channel at its own gain's limit makes up with its leak
        gain = np.where(borrows, gain, np.clip(gain * factor, *GAIN_LIMITS))
        leak = np.where(borrows, leak * factor, leak)
    out = apply_colour(image, gain, gamma, leak)
    out[~mask] = 0
    return out, {"gain": [round(float(v), 6) for v in gain], "leak": [round(float(v), 6) for v in leak],
                 "gamma": [float(v) for v in gamma], "target_mean": [float(v) for v in target]}
