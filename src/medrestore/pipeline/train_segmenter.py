"""train_segmenter: the U-Net vessel segmenter on the clean training images that have manual masks
(Frangi stands in when there are none), measured on the clean test images; writes
``SEGMENTER/{model.safetensors,model.json,metrics.json}``.

The libraries: :mod:`medrestore.training.segmenter` (training), :mod:`medrestore.vessels`
(the segmenter as a model, its scores). Here: which images, which binarisation rule, the outputs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import save_file

from medrestore.core.io import (
    InputError,
    atomic_dir,
    atomic_path,
    read_image,
    read_json,
    read_mask,
    write_json_atomic,
)
from medrestore.pipeline.paths import PATCHES, PREPARED, SCORING_SEGMENTER, SEGMENTER
from medrestore.pipeline.stage import params, run
from medrestore.tracking.runs import log_datasets, tag_outputs
from medrestore.training.segmenter import train_segmenter
from medrestore.vessels import (
    FRANGI_NAME,
    UNET_THRESHOLD,
    VesselSegmenter,
    evaluate_segmenter,
    load_vessel_segmenter,
)


def main(argv: list[str] | None = None) -> None:
    """``train_segmenter``: the segmenter of the vessel scores and of the vessel-aware losses;
    ``train_segmenter scoring``: the independent one (params ``scoring_segmenter``: the second
    observer's masks, another seed), written to SCORING_SEGMENTER."""
    argv = sys.argv[1:] if argv is None else argv
    which = argv[0] if argv else ""
    if which not in ("", "scoring"):
        raise InputError(f"train_segmenter takes no argument or 'scoring', got {which!r}. Fix: python "
                         "stages/train_segmenter.py [scoring]")
    all_p = params()
    p, seed, out, name, logged = all_p["segmenter"], all_p["seed"], SEGMENTER, "train_segmenter", all_p["segmenter"]
    if which == "scoring":
        scoring = {"observer": 2, "seed_offset": 1, **(all_p.get("scoring_segmenter") or {})}
        p = {**p, "observer": scoring["observer"]}
        seed, out, name = seed + int(scoring["seed_offset"]), SCORING_SEGMENTER, "train_scoring_segmenter"
        logged = {**p, "seed": seed}
    with run(name, logged, all_p) as tracker:
        log_datasets(tracker, [PREPARED, PATCHES], "train")
        with atomic_dir(out) as tmp:
            metrics = train_segmenter_stage(PREPARED, read_json(PATCHES / "patches.json"), tmp, params=p, seed=seed)
        tag_outputs(tracker, [out])
        tracker.log_metrics(
            {f"segmenter.{k}": v["mean"] for k, v in metrics.items() if isinstance(v, dict) and "mean" in v}
        )


def masked_images(prepared_dir: str | Path, patches_meta: dict, split: str) -> list[dict]:
    """The prepared images of ``split`` (by the ids of ``patches.json``) that have a manual vessel mask.

    Each: ``id``, ``image`` (RGB uint8), ``fov``, ``vessels`` (bool) and ``vessels_2nd`` (bool or
    None: a second observer's mask, when the prepared manifest lists one). Images split by region
    (sources of fewer than three images) are left out: their regions lie in several splits.
    """
    prepared_dir = Path(prepared_dir)
    manifest = read_json(prepared_dir / "manifest.json")
    ids = set(patches_meta["splits"][split])
    out = []
    for e in manifest["images"]:
        if e["id"] not in ids or not e.get("vessels"):
            continue
        second = e.get("vessels_2nd")
        out.append({
            "id": e["id"],
            "image": read_image(prepared_dir / e["image"], "RGB"),
            "fov": read_mask(prepared_dir / e["fov"]),
            "vessels": read_mask(prepared_dir / e["vessels"]),
            "vessels_2nd": read_mask(prepared_dir / second) if second else None,
        })
    return out


def resolve_binarize_rule(threshold: float | str, train_masks: Sequence[np.ndarray],
                          train_fovs: Sequence[np.ndarray]) -> dict[str, Any]:
    """``threshold`` of params as a rule: a number is a fixed probability threshold;
    ``"train_fraction"`` marks, in every image, the share of its FOV that vessels cover on average
    in the training masks (a top-fraction rule like Frangi's, learned from the masks)."""
    if isinstance(threshold, str):
        if threshold != "train_fraction":
            raise InputError(f"params.yaml: segmenter.threshold is {threshold!r}. Fix: a probability in (0, 1) or "
                             "'train_fraction'.")
        share = float(np.mean([m[f].mean() for m, f in zip(train_masks, train_fovs)]))
        return {"rule": "top_fraction", "value": round(share, 6)}
    if not 0.0 < float(threshold) < 1.0:
        raise InputError(f"params.yaml: segmenter.threshold is {threshold}. Fix: a probability in (0, 1) or "
                         "'train_fraction'.")
    return {"rule": "threshold", "value": float(threshold)}


def train_segmenter_stage(
    prepared_dir: str | Path,
    patches_meta: dict,
    out_dir: str | Path,
    *,
    params: dict,
    seed: int,
) -> dict[str, Any]:
    """The ``train_segmenter`` stage: train the U-Net on the clean TRAIN images that have manual
    masks, measure it on the clean TEST images, write ``model.safetensors``, ``model.json`` and
    ``metrics.json`` to ``out_dir``.

    ``params``: ``steps``, ``patch``, ``batch``, ``lr``, ``lr_min``, ``width``, ``depth``,
    ``threshold`` (:func:`resolve_binarize_rule`), ``num_threads``. Test images with a second
    observer's mask (``vessels_2nd`` in the prepared manifest) also get that observer's agreement.

    With no training image with a mask, the Frangi segmenter is used: ``model.json`` says so,
    ``model.safetensors`` holds no tensor and ``metrics.json`` records why (and Frangi's scores on
    masked test images, if any).
    """
    out_dir = Path(out_dir)
    train = masked_images(prepared_dir, patches_meta, "train")
    test = masked_images(prepared_dir, patches_meta, "test")
    observer = int(params.get("observer", 1))
    fallback = ""
    if observer == 2 and train:  # the second observer's masks (CHASE_DB1's 2ndHO); images without one are left out
        second = [{**i, "vessels": i["vessels_2nd"]} for i in train if i["vessels_2nd"] is not None]
        if second:
            train = second
        else:  # a dataset without second-observer masks: the first observer's, still with its own seed
            observer = 1
            fallback = ("no training image has a second observer's mask: the first observer's masks are used "
                        "(another seed only)")
            print(f"[medrestore] WARNING: {prepared_dir}: {fallback}. Fix: a source with second-observer masks "
                  "(chase_db1) for a segmenter independent in its labels too.", file=sys.stderr)
    train_ids = sorted(i["id"] for i in train)
    seen = set(train_ids) & set(patches_meta["splits"]["test"])
    if seen:
        raise AssertionError(f"segmenter training images also in the test split: {sorted(seen)}")
    if not train:
        reason = ("no training image has a manual vessel mask: the Frangi segmenter (green channel, top 12 % of FOV "
                  "scores) is used")
        with atomic_path(out_dir / "model.safetensors") as tmp:
            save_file({}, str(tmp), metadata={"model": FRANGI_NAME})
            os.chmod(tmp, 0o644)  # safetensors may recreate the file with the process umask (as save_model)
        write_json_atomic(out_dir / "model.json",
                          {"model": FRANGI_NAME, "task": "vessel-segmentation", "reason": reason, "train_ids": []})
        metrics = {**evaluate_segmenter(VesselSegmenter(None), test),
                   "reason": reason} if test else {"segmenter": FRANGI_NAME, "test_images": 0, "reason": reason}
        write_json_atomic(out_dir / "metrics.json", metrics)
        return metrics
    rule = resolve_binarize_rule(params.get("threshold", UNET_THRESHOLD), [i["vessels"] for i in train],
                                 [i["fov"] for i in train])
    train_segmenter(
        [i["image"] for i in train], [i["vessels"] for i in train], [i["fov"] for i in train], out_dir,
        steps=int(params["steps"]), patch_size=int(params["patch"]), batch_size=int(params["batch"]),
        lr=float(params["lr"]),
        lr_min=float(params.get("lr_min", 1e-4)), seed=int(seed), depth=int(params.get("depth", 3)),
        width=int(params.get("width", 8)),
        accelerator=params.get("accelerator", "cpu"), num_threads=params.get("num_threads"),
        extra_meta={"binarize": rule, "train_ids": train_ids, "observer": observer,
                    **({"observer_note": fallback} if fallback else {})},
    )
    segmenter, _ = load_vessel_segmenter(out_dir)
    metrics = {**evaluate_segmenter(segmenter, test), "binarize": rule, "train_images": len(train_ids)}
    write_json_atomic(out_dir / "metrics.json", metrics)
    return metrics
