"""Do vessels survive restoration? Scores of a vessel map against a reference map, inside the FOV:
AUC, Dice, precision/recall, **thin-vessel recall** (are the 1-2 px vessels still there?) and
**invented-vessel rate** (how much of what is detected lies away from any reference vessel); and
the scores of a whole segmenter on a set of test images (:func:`evaluate_segmenter`).

All widths and distances are in pixels of the image evaluated: compare scores only between images
of the same size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from medrestore.models.unet import UNet
from medrestore.vessels.frangi import _fov_or_all, segment_frangi
from medrestore.vessels.segmenter import VesselSegmenter, segment_unet

# ----------------------------------------------------------------------------- score defaults
THIN_MAX_WIDTH = 2.0
THIN_TOLERANCE = 1.0
INVENTED_DISTANCE = 2.0


# ============================================================================= scores
def thin_vessel_mask(reference: np.ndarray, fov: np.ndarray | None = None, *,
                     max_width: float = THIN_MAX_WIDTH) -> np.ndarray:
    """Reference vessel pixels that belong to a vessel at most ``max_width`` px wide.

    Rule: skeletonise the (in-FOV) reference mask; the local width at a skeleton pixel is
    ``2 * d`` where ``d`` is its Euclidean distance to the nearest background pixel (a 1 px or
    2 px wide vessel has ``d = 1`` on its skeleton, so width 2; a 3 px wide one has ``d = 2``,
    width 4); every reference pixel takes the width of its nearest skeleton pixel; pixels whose
    width is ``<= max_width`` are thin. With the default 2.0 the thin vessels are those 1-2 px
    wide (diagonal 2 px vessels with ``d = sqrt 2`` count as wider).
    """
    from skimage.morphology import skeletonize

    ref = np.asarray(reference).astype(bool) & _fov_or_all(fov, np.shape(reference))
    if not ref.any():
        return ref
    dist = ndi.distance_transform_edt(np.pad(ref, 1))[1:-1, 1:-1]  # padding: the image edge is background
    skel = skeletonize(ref)
    width_at_skel = np.where(skel, 2.0 * dist, np.inf)
    nearest = ndi.distance_transform_edt(~skel, return_distances=False, return_indices=True)
    width = width_at_skel[tuple(nearest)]
    return ref & (width <= max_width + 1e-9)


def _distance_to(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest True pixel of ``mask`` (inf if none)."""
    if not mask.any():
        return np.full(mask.shape, np.inf)
    return ndi.distance_transform_edt(~mask)


def vessel_scores(
    pred_score: np.ndarray | None,
    pred_binary: np.ndarray,
    reference_mask: np.ndarray,
    fov: np.ndarray | None = None,
    *,
    thin_max_width: float = THIN_MAX_WIDTH,
    thin_tolerance: float = THIN_TOLERANCE,
    invented_distance: float = INVENTED_DISTANCE,
) -> dict[str, float]:
    """Scores of a predicted vessel map against a reference map, inside the FOV only.

    - ``auc``: ROC AUC of ``pred_score`` over the FOV pixels (``pred_binary`` when ``pred_score``
      is None); NaN when the reference is all vessel or all background in the FOV;
    - ``dice``, ``precision``, ``recall`` (sensitivity), ``specificity`` of ``pred_binary``
      (Dice is 1 when both maps are empty);
    - ``thin_recall``: share of thin reference pixels (:func:`thin_vessel_mask`, width
      ``<= thin_max_width`` px) with a detected pixel within ``thin_tolerance`` px (Euclidean;
      1 px = the pixel itself or one of its 4 neighbours): a 1 px shift of a thin vessel is not a
      loss, its disappearance is. NaN when the reference has no thin vessel;
    - ``thin_recall_chance``: the thin recall that detections unrelated to the vessels would get,
      i.e. the share of FOV pixels within ``thin_tolerance`` of a detected pixel. A dense, noisy
      map reaches a high thin recall by chance (CHASE_DB1 at 768 px, sigma-25 noise: thin recall
      0.44 at a chance level of 0.37, against 0.42 at 0.16 for the clean image), so read
      ``thin_recall`` against it; ``thin_recall_above_chance`` is
      ``(thin_recall - chance) / (1 - chance)`` (Cohen's-kappa style: 0 = chance, 1 = all found);
    - ``invented_rate``: share of detected pixels farther than ``invented_distance`` px from every
      reference vessel pixel (0 when nothing is detected);
    - counts ``fov_pixels``, ``reference_pixels``, ``detected_pixels``, ``thin_pixels``.

    The reference is cut to the FOV before distances and widths are taken.
    """
    from sklearn.metrics import roc_auc_score

    ref = np.asarray(reference_mask).astype(bool)
    det = np.asarray(pred_binary).astype(bool)
    if det.shape != ref.shape:
        raise ValueError(f"predicted map {det.shape} and reference map {ref.shape} differ in shape")
    fov = _fov_or_all(fov, ref.shape)
    score = det.astype(np.float32) if pred_score is None else np.asarray(pred_score, dtype=np.float64)
    if score.shape != ref.shape:
        raise ValueError(f"score map {score.shape} and reference map {ref.shape} differ in shape")
    if not np.all(np.isfinite(score[fov])):
        raise ValueError("the score map holds NaN or infinite values inside the FOV")
    ref, det = ref & fov, det & fov
    y, s = ref[fov], score[fov]

    auc = float(roc_auc_score(y, s)) if 0 < y.sum() < y.size else float("nan")
    tp = int((det & ref).sum())
    n_ref, n_det = int(ref.sum()), int(det.sum())
    n_fov = int(fov.sum())
    tn = n_fov - n_ref - n_det + tp
    dice = 1.0 if n_ref + n_det == 0 else 2.0 * tp / (n_ref + n_det)

    thin = thin_vessel_mask(ref, fov, max_width=thin_max_width)
    n_thin = int(thin.sum())
    near_detection = _distance_to(det) <= thin_tolerance + 1e-9
    thin_chance = float((near_detection & fov).sum() / n_fov) if n_fov else float("nan")
    thin_recall = float((thin & near_detection).sum() / n_thin) if n_thin else float("nan")
    above = (thin_recall - thin_chance) / (1.0 - thin_chance) if thin_chance < 1.0 else float("nan")

    invented = det & (_distance_to(ref) > invented_distance + 1e-9)
    invented_rate = float(invented.sum() / n_det) if n_det else 0.0

    return {
        "auc": auc,
        "dice": float(dice),
        "precision": float(tp / n_det) if n_det else float("nan"),
        "recall": float(tp / n_ref) if n_ref else float("nan"),
        "specificity": float(tn / (n_fov - n_ref)) if n_fov > n_ref else float("nan"),
        "thin_recall": thin_recall,
        "thin_recall_chance": thin_chance,
        "thin_recall_above_chance": float(above),
        "invented_rate": invented_rate,
        "fov_pixels": float(n_fov),
        "reference_pixels": float(n_ref),
        "detected_pixels": float(n_det),
        "thin_pixels": float(n_thin),
    }


def score_image(
    image: np.ndarray,
    reference_mask: np.ndarray,
    fov: np.ndarray | None = None,
    *,
    model: UNet | None = None,
    **score_kwargs: Any,
) -> dict[str, float]:
    """Segment ``image`` (U-Net ``model`` if given, else Frangi) and score it against ``reference_mask``."""
    score, binary = segment_unet(model, image, fov) if model is not None else segment_frangi(image, fov)
    return vessel_scores(score, binary, reference_mask, fov, **score_kwargs)


# ============================================================================= a segmenter on test images
def _mean_range(values: Sequence[float]) -> dict[str, float]:
    """Mean, min and max of the finite values (rounded to 6 digits); NaN when there are none."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"mean": round(float(v.mean()), 6), "min": round(float(v.min()), 6), "max": round(float(v.max()), 6)}


def evaluate_segmenter(segmenter: VesselSegmenter, test: Sequence[dict]) -> dict[str, Any]:
    """AUC and Dice of ``segmenter`` and of Frangi on clean test images, inside the FOV, against
    the first observer; the second observer's agreement (Dice, sensitivity, specificity) where
    there is one: what a segmenter can be expected to reach.

    ``test``: dicts with ``id``, ``image``, ``fov``, ``vessels`` and optionally ``vessels_2nd``, as
    :func:`medrestore.pipeline.train_segmenter.masked_images` reads them from a prepared folder.
    """
    frangi = VesselSegmenter(None)
    rows = []
    for item in test:
        fov, ref = item["fov"], item["vessels"]
        row: dict[str, Any] = {"id": item["id"]}
        for key, seg in (("", segmenter), ("frangi_", frangi)):
            if key and segmenter.model is None:
                continue
            sc = vessel_scores(*seg(item["image"], fov), ref, fov)
            row.update({f"{key}auc": round(sc["auc"], 6), f"{key}dice": round(sc["dice"], 6)})
        if item.get("vessels_2nd") is not None:
            sc = vessel_scores(None, item["vessels_2nd"], ref, fov)
            row.update({"observer2_dice": round(sc["dice"], 6), "observer2_recall": round(sc["recall"], 6),
                        "observer2_specificity": round(sc["specificity"], 6)})
        rows.append(row)
    out: dict[str, Any] = {"segmenter": segmenter.name, "test_images": len(rows), "inside": "fov",
                           "reference": "first observer"}
    for key in ("auc", "dice", "frangi_auc", "frangi_dice", "observer2_dice", "observer2_recall",
                "observer2_specificity"):
        vals = [r[key] for r in rows if key in r]
        if vals:
            out[key] = _mean_range(vals)
    out["per_image"] = rows
    return out
