"""What the evaluate stage measures and how it summarises it: every test image restored by every
method and scored (the metrics of :data:`medrestore.evaluation.metrics.REGISTRY`), then statistics over the
images. The stage itself, which reads the folders and writes the outputs, is
:mod:`medrestore.pipeline.evaluate`.

Rows of the per-image table: the degraded input (the floor), every trained model of the task,
every classical baseline, and the clean image (the ceiling: no-reference metrics, and vessel scores
against the manual mask when there is one).

Super-resolution tasks (``scale`` > 1 in ``corruption.json``): the degraded test images are the
low-resolution inputs; models return ``scale`` times larger images; the clean reference is the
top-left crop of the clean image to a multiple of ``scale`` (the corrupt stage's "modcrop"). The
floor row ``degraded`` is then the input upsampled with PIL's bicubic filter
(:func:`medrestore.degradations.upsample_bicubic`; for ``sr`` tasks the ``bicubic`` baseline gives
the same image and is listed so that the paired test has a classical comparator), and every
baseline that works at the input's size (a denoiser) is followed by the same bicubic upsampling.

Vessels: the segmenter of the ``train_segmenter`` stage (a U-Net trained on manual masks) when
there is one, else the Frangi segmenter (:func:`medrestore.vessels.load_vessel_segmenter`). The
same segmenter is run on the clean image, on the degraded input and on every restoration.
``ref_*`` columns compare with its segmentation of the clean image, ``manual_*`` columns with the
dataset's manual mask (first observer; only for images that have one).

Statistics (``summary.json``): per method and test variant, the mean and a 95 % interval of every
metric. The unit of every interval and test is the subject (:func:`subjects_by_image`: the person
photographed, ``subject`` in per_image.csv), not the image: both eyes of one child are not two
independent samples. A metric is first averaged over each subject's images, then the interval is
SciPy's bias-corrected and accelerated (BCa) bootstrap over the subjects' means (2000 resamples,
seeded; :func:`interval`); with the same number of images per subject the mean is the mean over the
images. Sources without subjects: each image is its own subject. Every interval states
``n_images`` and ``n_subjects`` beside it. ``paired_tests``: every model against the best classical
baseline of that variant (highest mean ``psnr_fov``) on the same images, with the mean paired
difference (model minus baseline), its 95 % interval (the same BCa bootstrap over the subjects' mean
differences) and the two-sided Wilcoxon signed-rank p-value on the subjects' mean differences
(``scipy.stats.wilcoxon``, zero differences dropped, exact distribution for small n). With n
subjects the smallest p the Wilcoxon test can give is 2 / 2**n (0.125 for 4 subjects): few subjects
mean little power, so ``min_p`` is stored beside each p-value.

Cost: parameters and FLOPs per output megapixel of every model go into ``summary.json`` (they are
the same on every machine). Seconds per megapixel of every method go to ``cost.json`` beside it,
with the parameters and FLOPs again and the machine that timed them: timings change from run to
run, so ``cost.json`` is the one output that is not byte-identical on rerun (the stage declares it
an output with ``cache: false``, not a metric; ``per_image.csv``, ``summary.json`` and ``restored/`` are
byte-identical). Timings are the median over the test images (and variants) of one restoration
each, the first one excluded as warm-up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from medrestore.core.io import InputError
from medrestore.degradations import noise_sigma, spec_scale, upsample_bicubic
from medrestore.evaluation import (
    metrics as M,  # its views are read at call time: a metric may be registered after import
)
from medrestore.evaluation.metrics import BEST_BY, all_metrics
from medrestore.models import BASELINES
from medrestore.vessels import VesselSegmenter, vessel_scores


# ============================================================================= floor and baselines
def baseline_function(name: str) -> Callable[..., Any]:
    if name not in BASELINES:
        raise InputError(f"params.yaml: unknown baseline {name!r} in evaluate.baselines. Fix: use "
                         f"{', '.join(sorted(BASELINES))}.")
    return BASELINES[name]


def run_baseline(fn: Callable[..., Any], low: np.ndarray, sigma: float, scale: int) -> np.ndarray:
    """A baseline on the (low-resolution) input: given ``scale`` when it takes one (``bicubic``),
    else run at the input's size and, for ``scale`` > 1, followed by :func:`upsample_bicubic`."""
    import inspect

    if scale > 1 and "scale" in inspect.signature(fn).parameters:
        out = np.asarray(fn(low, sigma, scale=scale), dtype=np.float32)
    else:
        out = np.asarray(fn(low, sigma), dtype=np.float32)
    if out.shape[:2] == low.shape[:2] and scale > 1:
        out = upsample_bicubic(out, scale)
    return np.clip(out, 0.0, 1.0)


def baselines_for(task: str, baselines: list[str] | Mapping[str, list[str]]) -> list[str]:
    """``evaluate.baselines`` for one task: a list (every task), or a mapping whose keys are task
    names or task-name prefixes (``denoise`` covers ``denoise-g25``; the longest matching key wins;
    ``default`` when none matches)."""
    if not isinstance(baselines, Mapping):
        return list(baselines)
    if task in baselines:
        return list(baselines[task])
    keys = [k for k in baselines if k != "default" and task.startswith(f"{k}-")]
    if keys:
        return list(baselines[max(keys, key=len)])
    return list(baselines.get("default", []))


# ============================================================================= checks and statistics
def assert_test_unseen(patches_meta: dict, segmenter_train_ids: list[str] | tuple[str, ...] = ()) -> None:
    """Test images never appear in training or validation, nor among the vessel segmenter's
    training images: checked by image (or region) id, and by source image for region splits."""
    test = set(patches_meta["splits"]["test"])
    for split in ("train", "val"):
        overlap = test & set(patches_meta["splits"][split])
        if overlap:
            raise AssertionError(f"test images also in {split}: {sorted(overlap)}")
    test_sources = test | {e.get("source_id", e["id"]) for e in patches_meta.get("test", [])}
    overlap = test_sources & set(segmenter_train_ids)
    if overlap:
        raise AssertionError(f"test images among the vessel segmenter's training images: {sorted(overlap)}")


def subjects_of(table: pd.DataFrame) -> pd.Series:
    """The subject of each row of a per-image table: its ``subject`` column where given, else its
    image id (a source without subjects: each image is its own subject)."""
    ids = table["image_id"].astype(str)
    if "subject" not in table:
        return ids
    subj = table["subject"]
    return subj.where(subj.notna() & (subj.astype(str) != ""), ids).astype(str)


def image_subjects(table: pd.DataFrame) -> dict[str, str]:
    """Image id -> subject of a per-image table (:func:`subjects_of`)."""
    return dict(zip(table["image_id"].astype(str), subjects_of(table)))


def subject_means(values: np.ndarray, subjects: np.ndarray | list | None = None) -> np.ndarray:
    """The mean of each subject's finite values (subjects in sorted order; a subject without a finite
    value left out). ``subjects`` None: each value is its own subject, in the given order."""
    values = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(values)
    if subjects is None:
        return values[keep]
    subjects = np.asarray(subjects, dtype=object)
    if subjects.shape != values.shape:
        raise ValueError(f"{values.size} values but {subjects.size} subjects")
    return pd.Series(values[keep]).groupby(subjects[keep].astype(str), sort=True).mean().to_numpy(dtype=np.float64)


def bootstrap_ci(values: np.ndarray, seed: int, n: int = 2000, level: float = 0.95,
                 subjects: np.ndarray | list | None = None) -> tuple[float, float]:
    """The ``level`` interval of the mean of ``values`` (non-finite values left out) over subjects:
    the values are averaged per subject first (:func:`subject_means`; ``subjects`` None: each value
    its own subject), then SciPy's bias-corrected and accelerated bootstrap of the mean of the
    subjects' means (``scipy.stats.bootstrap``, BCa, ``n`` resamples drawn from ``seed``), which
    widens the too-narrow percentile interval of a few skewed values. Where BCa is undefined (SciPy
    warns and returns NaN: e.g. every resample has the same mean), the percentile interval of the
    same resamples; equal values give the point."""
    import warnings

    from scipy import stats

    values = subject_means(values, subjects)
    if values.size == 0:
        return float("nan"), float("nan")
    if values.size == 1 or np.all(values == values[0]):
        return float(values[0]), float(values[0])
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a degenerate BCa warns and gives NaN: the percentile interval follows
            res = stats.bootstrap((values,), np.mean, n_resamples=n, confidence_level=level, method=method,
                                  rng=np.random.default_rng(seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(lo) and np.isfinite(hi):
            return lo, hi
    return float(values.min()), float(values.max())


def interval(values: np.ndarray, seed: int, subjects: np.ndarray | list | None = None,
             digits: int = 6) -> dict[str, Any]:
    """The one interval of every stored result (summary.json, claims, targets, the report): the mean
    over subjects of their mean value, its 95 % BCa bootstrap interval over subjects
    (:func:`bootstrap_ci`), and how many images and subjects it rests on (finite values only)."""
    values = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(values)
    means = subject_means(values, subjects)
    lo, hi = bootstrap_ci(values, seed, subjects=subjects)
    mean = float(means.mean()) if means.size else float("nan")
    return {"mean": round(mean, digits), "ci95": [round(lo, digits), round(hi, digits)],
            "n_images": int(keep.sum()), "n_subjects": int(means.size)}


def paired_test(model_values: np.ndarray, baseline_values: np.ndarray, seed: int,
                subjects: np.ndarray | list | None = None) -> dict[str, Any]:
    """Model minus baseline on the same images, tested over subjects (each subject's mean
    difference; ``subjects`` None: each image its own subject): n (subjects), mean difference,
    its 95 % BCa bootstrap interval (:func:`interval`), the Wilcoxon signed-rank two-sided p-value
    over the subjects' differences and the smallest p possible with this n, how many subjects favour
    each side, and the numbers of images and subjects."""
    from scipy.stats import wilcoxon

    a, b = np.asarray(model_values, np.float64), np.asarray(baseline_values, np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    d = np.where(keep, a - b, np.nan)
    per_subject = subject_means(d, subjects)
    n = int(per_subject.size)
    out: dict[str, Any] = {"n": n, "n_images": int(keep.sum()), "n_subjects": n}
    if n == 0:
        return out
    ci = interval(d, seed, subjects)
    nonzero = int(np.count_nonzero(per_subject))
    if nonzero == 0:
        p = 1.0
    else:
        p = float(wilcoxon(per_subject, zero_method="wilcox", alternative="two-sided").pvalue)
    out.update({
        "mean_diff": ci["mean"],
        "ci95": ci["ci95"],
        "wilcoxon_p": round(p, 6),
        "min_p": round(2.0 / 2.0**nonzero, 6) if nonzero else 1.0,
        "model_better": int(np.sum(per_subject > 0)),
        "baseline_better": int(np.sum(per_subject < 0)),
    })
    return out


def paired_tests(table: pd.DataFrame, seed: int) -> dict[str, Any]:
    """Every model against the best baseline (highest mean :data:`~medrestore.evaluation.metrics.BEST_BY`,
    ``psnr_fov``) per test variant, on every paired metric of the registry, over subjects."""
    out: dict[str, Any] = {}
    for variant, grp in table.groupby("variant", sort=True):
        base = grp[grp["kind"] == "baseline"]
        if base.empty or not (grp["kind"] == "model").any():
            continue
        means = base.groupby("method")[BEST_BY].mean()
        best = str(means.idxmax()) if means.notna().any() else str(min(base["method"].unique()))
        ref = grp[grp["method"] == best].set_index("image_id")
        subjects = subjects_of(grp[grp["method"] == best]).to_numpy()
        entry: dict[str, Any] = {"baseline": best, "chosen_by": f"highest mean {BEST_BY}", "models": {}}
        for model in sorted(grp.loc[grp["kind"] == "model", "method"].unique()):
            rows = grp[grp["method"] == model].set_index("image_id").reindex(ref.index)
            tests = {}
            for metric in M.PAIRED:
                if metric in rows and rows[metric].notna().any() and ref[metric].notna().any():
                    t = paired_test(rows[metric].to_numpy(float), ref[metric].to_numpy(float), seed, subjects)
                    if t["n"]:
                        t["higher_is_better"] = metric not in M.LOWER_IS_BETTER
                        tests[metric] = t
            entry["models"][model] = tests
        out[str(variant)] = entry
    return out


def subjects_by_image(patches_meta: dict, manifest: dict | None = None) -> dict[str, str]:
    """Test image id -> subject: the test entry's ``subject`` (patches.json), else the prepare
    manifest's subject of its source image, else the image id (each image its own subject)."""
    by_source = {e["id"]: e.get("subject") or e["id"] for e in (manifest or {}).get("images", [])}
    out = {}
    for e in patches_meta.get("test", []):
        source = e.get("source_id", e["id"])
        whole = source == e["id"]  # a region of an image (few-image splits) is its own subject
        out[e["id"]] = e.get("subject") or (by_source.get(source) if whole else None) or e["id"]
    return out


# ============================================================================= per image
def vessel_columns(image: np.ndarray, fov: np.ndarray, segmenter: VesselSegmenter, clean_ref: np.ndarray,
                   manual: np.ndarray | None,
                   scoring_segmenter: VesselSegmenter | None = None) -> dict[str, float]:
    """The vessel scores of one image: ``segmenter``'s vessels against its own on the clean image
    (``ref_``) and against the manual mask (``manual_``); with ``scoring_segmenter`` (the independent segmenter)
    and a manual mask, also the scoring segmenter's vessels against the manual mask (``indep_``)."""
    score, binary = segmenter(image, fov)
    out = {f"ref_{k}": v for k, v in vessel_scores(score, binary, clean_ref, fov).items() if k in M.VESSEL_KEYS}
    if manual is not None:
        out.update({f"manual_{k}": v for k, v in vessel_scores(score, binary, manual,
                                                               fov).items() if k in M.VESSEL_KEYS})
        if scoring_segmenter is not None:
            score_b, binary_b = scoring_segmenter(image, fov)
            out.update(
                {
                    f"indep_{k}": v
                    for k, v in vessel_scores(score_b, binary_b, manual, fov).items()
                    if k in M.VESSEL_KEYS
                }
            )
    return out


def task_scale(corruption: dict, case: dict) -> int:
    """A test case's upscaling factor: the task's ``scale`` in ``corruption.json``, else its spec's."""
    if corruption.get("scale") is not None:
        return int(corruption["scale"])
    return spec_scale(case.get("spec", {}))


def case_sigma(params: dict, spec: dict | None = None) -> float:
    """Noise sigma (0-255) a test case's corruption drew, from its ``spec`` and ``params`` (both in
    ``corruption.json``): :func:`medrestore.degradations.noise_sigma`, the sigmas of its noise steps
    only (chains walked, independent noises in quadrature), 0 without noise. A blur's sigma is a
    width in pixels and is never read as noise. Without ``spec``, the old reading of the params
    alone (any top-level or step ``sigma``), which cannot tell a blur's sigma from a noise's."""
    if spec is not None:
        return noise_sigma(spec, params)
    if "sigma" in params:
        return float(params["sigma"])
    steps = params.get("steps") or []
    return float(np.sqrt(sum(float(p.get("sigma", 0.0)) ** 2 for p in steps if isinstance(p, dict))))


def median_after_warmup(times: list[float]) -> float:
    """Median of one method's timings, the first one (warm-up) excluded when there are others."""
    return float(np.median(times[1:] if len(times) > 1 else times))


# ============================================================================= scores and summary
def score_restored(restored: np.ndarray, clean: np.ndarray, fov: np.ndarray, segmenter: VesselSegmenter,
                   clean_vessels: np.ndarray,
                   manual: np.ndarray | None, assets_dir: str | None = None,
                   scoring_segmenter: VesselSegmenter | None = None) -> dict[str, float]:
    """Every metric of one restored (or degraded) image: quality against the clean image, then the
    vessel scores against the clean image's segmentation and the manual mask (:func:`vessel_columns`)."""
    return {**all_metrics(restored, clean, fov, assets_dir),
            **vessel_columns(restored, fov, segmenter, clean_vessels, manual, scoring_segmenter)}


def score_clean(clean: np.ndarray, fov: np.ndarray, segmenter: VesselSegmenter, clean_vessels: np.ndarray,
                manual: np.ndarray | None,
                assets_dir: str | None = None, scoring_segmenter: VesselSegmenter | None = None) -> dict[str, float]:
    """The ceiling row: no-reference metrics of the clean image and, where there is a manual mask,
    the segmenter on the clean image against it."""
    row = all_metrics(clean, None, None, assets_dir)
    if manual is not None:
        row.update(vessel_columns(clean, fov, segmenter, clean_vessels, manual, scoring_segmenter))
    return row


def per_image_table(rows: list[dict]) -> pd.DataFrame:
    """per_image.csv's table: the row keys (``subject``: the image id where a row has none), then
    every metric column of the registry in its order (empty where a row has no value)."""
    table = pd.DataFrame(rows)
    table["subject"] = subjects_of(table)
    for col in M.COLUMNS:
        if col not in table:
            table[col] = np.nan
    order = ["task", "method", "kind", "image_id", "subject", "variant", "sigma", "scale", *M.COLUMNS]
    return table[order]


def summarise(table: pd.DataFrame, seed: int) -> dict[str, dict[str, dict]]:
    """Method -> test variant -> kind, numbers of images and subjects and, per metric with a value,
    its :func:`interval` over subjects (mean, 95 % interval, images, subjects; 6 decimals)."""
    methods: dict[str, dict[str, dict]] = {}
    for (method, variant), grp in table.groupby(["method", "variant"], sort=True):
        subjects = subjects_of(grp).to_numpy()
        stats = {"kind": grp["kind"].iloc[0], "n": len(grp), "n_images": len(grp),
                 "n_subjects": int(len(set(subjects)))}
        for col in M.COLUMNS:
            vals = grp[col].to_numpy(dtype=float)
            if np.isfinite(vals).any():
                stats[col] = interval(vals, seed, subjects)
        methods.setdefault(method, {})[variant] = stats
    return methods


def rounded_cost(cost: dict[str, dict]) -> dict[str, dict]:
    """Methods' costs sorted by name, floats rounded to one decimal (summary.json's ``cost``)."""
    return {
        k: {kk: (round(vv, 1) if isinstance(vv, float) else vv) for kk, vv in v.items()}
        for k, v in sorted(cost.items())
    }
