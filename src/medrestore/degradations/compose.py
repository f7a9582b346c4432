"""The kind registry, composition, and the entry points that seed and replay a corruption.

:data:`DEGRADATIONS` maps every kind name to its function. :func:`apply_spec` runs one spec
(``{"kind": name, **keys}``) with a given rng and FOV mask; :func:`corrupt` is the entry point on
uint8 images: it builds ``numpy.random.default_rng(seed_words)`` (no global RNG, no clock), applies the
spec, and quantises the result to 8 bits, so the same image, spec, seed words and mask replay the
same bytes. :func:`sr_pair` adds the matching high-resolution target for the SR kinds
(:func:`spec_scale`); :func:`stable_id` turns names into seed words identically on every machine.

Composition:

``chain``          steps: [spec, ...] applied in order with the one rng; params ``{"steps": [...]}``.
                   The FOV mask is shrunk along with the image after a downscaling step.
``fundus_random``  cofe-Net's random subset of its 3 factors (illumination = colour, halo, hole;
                   spots; blur), in cofe-Net's order: probabilities={factor: p} (0.5 each),
                   at_least_one=True (each of the 7 non-empty subsets equally likely by default),
                   options={component: {keys}}; params ``{"groups": [...], "steps": [{"kind": ...}]}``.

Reading the records back: a kind's params say what it drew but not what kind drew them, and
``sigma`` means a noise level (0-255) for the noise kinds, a blur width (pixels) for the blurs, and
the smoothing of a light map for ``fundus_halo``/``fundus_hole``. :func:`noise_sigma` and
:func:`blur_sigma` walk a spec beside its params and return the two quantities separately.
"""

from __future__ import annotations

import hashlib
import inspect
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from medrestore.core.params import SCALING_KINDS, spec_scale
from medrestore.degradations.blur import BLUR_SIGMA_KINDS, defocus_blur, gaussian_blur, jpeg_compression, motion_blur
from medrestore.degradations.core import Degradation, _check_probability, _fov_mask, _in_fov, to_float, to_uint8
from medrestore.degradations.fundus import (
    cataract_haze,
    fundus_blur,
    fundus_colour,
    fundus_halo,
    fundus_hole,
    fundus_spots,
)
from medrestore.degradations.noise import (
    NOISE_SIGMA_KINDS,
    gaussian_noise,
    gaussian_proportion,
    poisson_noise,
    poisson_proportion,
    salt_pepper,
    speckle_noise,
)
from medrestore.degradations.resampling import blur_downscale, downscale

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
if not set(SCALING_KINDS) <= set(DEGRADATIONS):
    raise RuntimeError("medrestore.core.params.SCALING_KINDS names unregistered kinds: "
                       f"{sorted(set(SCALING_KINDS) - set(DEGRADATIONS))}")


# ---------------------------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------------------------


def stable_id(text: str) -> int:
    """A 32-bit integer from a name, identical on every machine and Python run."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


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


# ---------------------------------------------------------------------------------------------
# named quantities read back from the records
# ---------------------------------------------------------------------------------------------


def _leaves(spec: dict[str, Any], params: dict[str, Any], scale: int = 1) -> Iterator[tuple[Any, dict[str, Any], int]]:
    """``(kind, params, scale)`` of every step a spec ran, in order: chains (nested too) walked beside
    their params, ``fundus_random``'s steps read from its params (they record their kind). ``scale``
    is how many times smaller than the corruption's input the step's input was."""
    kind = spec.get("kind")
    if kind == "chain":
        specs, records = spec.get("steps", []), params.get("steps", [])
        if len(specs) != len(records):
            raise ValueError(
                f"a chain spec of {len(specs)} steps has params of {len(records)}: they are not its record"
            )
        for step, record in zip(specs, records, strict=True):
            yield from _leaves(step, record, scale)
            scale *= spec_scale(step)
    elif kind == "fundus_random":
        for record in params.get("steps", []):
            yield record.get("kind"), record, scale
    else:
        yield kind, params, scale


def noise_sigma(spec: dict[str, Any], params: dict[str, Any]) -> float:
    """The noise level (sd on the 0-255 scale) a corruption drew: the ``sigma`` of its noise steps
    (:data:`NOISE_SIGMA_KINDS`), combined in quadrature (independent noises add their variances);
    0 without one. A blur's sigma (pixels) is never read as noise. ``params`` is what
    :func:`corrupt` returned for ``spec``."""
    if spec.get("kind") in NOISE_SIGMA_KINDS:
        return float(params["sigma"])
    return float(
        math.sqrt(sum(float(p["sigma"]) ** 2 for kind, p, _ in _leaves(spec, params) if kind in NOISE_SIGMA_KINDS))
    )


def blur_sigma(spec: dict[str, Any], params: dict[str, Any]) -> float:
    """The Gaussian blur width (sigma in pixels of the corruption's input) a corruption drew: the
    ``sigma`` of its blur steps (:data:`BLUR_SIGMA_KINDS`; one after a downscaling by s counts s
    times wider), combined in quadrature (Gaussian blurs compose so); 0 without one. Not counted:
    the non-Gaussian blurs (defocus, motion, cataract's box) and the antialiasing of downscaling.
    ``fundus_blur`` with ``kernel="cofe"`` counts the sigma it recorded, though its truncated
    kernel_w x kernel_h kernel blurs much less than that Gaussian."""
    return float(
        math.sqrt(sum((float(p["sigma"]) * s) ** 2 for kind, p, s in _leaves(spec, params) if kind in BLUR_SIGMA_KINDS))
    )
