"""The external evaluation ("another camera"): denoisers scored on fundus photographs whose colours
are not those of the training camera.

The images (:func:`external_cases`):

``recoloured``
    every test image of the patchify stage (CHASE_DB1's, never trained on), recoloured once to
    another camera's channel statistics (:func:`medrestore.data.photometric.recolour`): the profiles
    (``profiles``, of :data:`medrestore.data.photometric.PROFILES`: channel means inside the FOV with
    blue 30-60 and green 80-120) are taken in turn in an order drawn from the seed words
    ``[seed, stable_id("external"), EXTERNAL_WORD, 2**32 - 1]``; the per-channel gammas (log-uniform in
    ``gamma_range``) from ``[seed, stable_id("external"), EXTERNAL_WORD, image]``.
``sample``
    scikit-image's fundus photograph (``skimage.data.retina``, another camera), prepared as the
    pipeline prepares its sources (``prepare`` params: crop mode, size, FOV threshold).

Each clean image is degraded once by the task's test corruption with the seed words
``[seed, stable_id("external"), NOISE_WORD, image]``: every task sees the same noisy inputs. The
scores (:func:`score`) are PSNR and SSIM over the FOV against the clean (recoloured) image;
:func:`summarise_external` gives, per method and source group (``all``, ``recoloured``, ``sample``),
the mean and a 95 % bootstrap interval over images (:func:`medrestore.evaluation.scoring.bootstrap_ci`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medrestore.core.io import InputError, read_image, read_json, read_mask
from medrestore.data.fov import prepare_arrays, to_grey_rgb
from medrestore.data.photometric import PROFILES, recolour
from medrestore.degradations import stable_id
from medrestore.evaluation.scoring import bootstrap_ci

EXTERNAL_WORD = 1  # the recolouring of test image i: [seed, stable_id("external"), EXTERNAL_WORD, i]
NOISE_WORD = 2  # the corruption of external image i: [seed, stable_id("external"), NOISE_WORD, i]
METRICS = ("psnr_fov", "ssim_fov", "ssim", "psnr_green_fov")
GROUPS = ("all", "recoloured", "sample")


def seed_words(seed: int, word: int, index: int) -> list[int]:
    return [int(seed), stable_id("external"), int(word), int(index)]


def external_cases(patches_dir: Path, *, seed: int, profiles: list[str], gamma_range, sample: bool,
                   prepare: dict) -> list[dict]:
    """The clean external images: dicts with ``id``, ``source`` (recoloured | sample), ``profile``,
    ``gamma``, ``gain``, ``image`` (uint8 H x W x 3) and ``fov`` (bool H x W), in a fixed order."""
    unknown = [p for p in profiles if p not in PROFILES]
    if unknown or not profiles:
        raise InputError(f"params.yaml: evaluate_external.profiles {profiles!r}: unknown {unknown}. Fix: use some of "
                         f"{', '.join(PROFILES)}.")
    lo, hi = (float(v) for v in gamma_range)
    if not 0 < lo <= hi:
        raise InputError(f"params.yaml: evaluate_external.gamma_range is {list(gamma_range)}. Fix: [low, high] with 0 "
                         "< low <= high.")
    meta = read_json(Path(patches_dir) / "patches.json")
    grey = bool(meta.get("grey", False))
    cases: list[dict] = []
    if not grey:  # recolouring grey images means nothing
        # the profiles in a seeded order, taken in turn: every profile is used before any repeats
        order = np.random.default_rng(seed_words(seed, EXTERNAL_WORD, -1 % 2**32)).permutation(len(profiles))
        for i, entry in enumerate(meta["test"]):
            image = read_image(Path(patches_dir) / entry["image"], "RGB")
            fov = read_mask(Path(patches_dir) / entry["fov"])
            rng = np.random.default_rng(seed_words(seed, EXTERNAL_WORD, i))
            name = profiles[int(order[i % len(profiles)])]
            gamma = np.exp(rng.uniform(np.log(lo), np.log(hi), 3))
            out, params = recolour(image, fov, PROFILES[name], gamma=gamma)
            cases.append({"id": f"{entry['id']}@{name}", "source": "recoloured", "profile": name,
                          "gamma": params["gamma"],
                          "gain": params["gain"], "image": out, "fov": fov})
    if sample:
        import skimage.data

        try:
            image, fov, _ = prepare_arrays(skimage.data.retina()[..., :3], None, size=int(prepare["size"]),
                                           mode=prepare.get("mode", "border_centre"),
                                           fov_threshold=float(prepare.get("fov_threshold", 0.1)))
        except ValueError as exc:
            raise InputError("evaluate_external: scikit-image's fundus photograph cannot be prepared with the prepare "
                             f"params ({exc}). Fix: set evaluate_external.sample: false, or a prepare.size the "
                             "photograph (1411 px) allows.") from exc
        if grey:
            image = to_grey_rgb(image)
        cases.append({"id": "skimage-retina", "source": "sample", "profile": None, "gamma": None, "gain": None,
                      "image": image, "fov": fov})
    if not cases:
        raise InputError("params.yaml: evaluate_external has no images (grey data and sample: false). Fix: set "
                         "evaluate_external.sample: true.")
    return cases


def score(restored: np.ndarray, clean: np.ndarray, fov: np.ndarray) -> dict[str, float]:
    """:data:`METRICS` of a restoration against its clean image
    (:func:`medrestore.evaluation.metrics.full_reference`)."""
    from medrestore.evaluation.metrics import full_reference

    values = full_reference(restored, clean, fov)
    return {k: float(values[k]) for k in METRICS}


def summarise_external(rows: list[dict], seed: int) -> dict[str, dict]:
    """Method -> {"kind", group -> {"n", metric -> {"mean", "ci95"}}} over the rows' images."""
    out: dict[str, dict] = {}
    for method in sorted({r["method"] for r in rows}):
        mine = [r for r in rows if r["method"] == method]
        entry: dict = {"kind": mine[0]["kind"]}
        for group in GROUPS:
            sel = [r for r in mine if group == "all" or r["source"] == group]
            if not sel:
                continue
            stats: dict = {"n": len(sel)}
            for m in METRICS:
                vals = np.array([r[m] for r in sel], dtype=float)
                vals = vals[np.isfinite(vals)]
                if len(vals):
                    ci = bootstrap_ci(vals, seed)
                    stats[m] = {"mean": round(float(vals.mean()), 6),
                                "ci95": [round(float(ci[0]), 6), round(float(ci[1]), 6)]}
            entry[group] = stats
        out[method] = entry
    return out
