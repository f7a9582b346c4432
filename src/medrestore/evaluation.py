"""The evaluate stage: restore every test image with every method and score it.

Rows of the per-image table: the degraded input (the floor), every trained model of the task,
every classical baseline, and the clean image (the ceiling: no-reference metrics, and vessel scores
against the manual mask when there is one).

Super-resolution tasks (``scale`` > 1 in ``corruption.json``): the degraded test images are the
low-resolution inputs; models return ``scale`` times larger images; the clean reference is the
top-left crop of the clean image to a multiple of ``scale`` (the corrupt stage's "modcrop"). The
floor row ``degraded`` is then the input upsampled with PIL's bicubic filter
(:func:`upsample_bicubic`; for ``sr`` tasks the ``bicubic`` baseline gives the same image and is
listed so that the paired test has a classical comparator), and every baseline that works at the
input's size (a denoiser) is followed by the same bicubic upsampling.

Vessels: the segmenter of the ``train_segmenter`` stage (a U-Net trained on manual masks) when
there is one, else the Frangi segmenter (:func:`medrestore.vessels.load_vessel_segmenter`). The
same segmenter is run on the clean image, on the degraded input and on every restoration.
``ref_*`` columns compare with its segmentation of the clean image, ``manual_*`` columns with the
dataset's manual mask (first observer; only for images that have one).

Statistics (``summary.json``): per method and test variant, the mean and a 95 % percentile
bootstrap interval over test images of every metric; ``paired_tests``: every model against the
best classical baseline of that variant (highest mean ``psnr_fov``) on the same images, with the
mean paired difference (model minus baseline), its 95 % paired bootstrap interval (images resampled
with replacement, 2000 draws, seeded) and the two-sided Wilcoxon signed-rank p-value
(``scipy.stats.wilcoxon``, zero differences dropped, exact distribution for small n). With n test
images the smallest p the Wilcoxon test can give is 2 / 2**n (0.0156 for n = 7): few images mean
little power, so ``min_p`` is stored beside each p-value.

Cost: parameters and FLOPs per output megapixel of every model go into ``summary.json`` (they are
the same on every machine). Seconds per megapixel of every method go to ``cost.json`` beside it,
with the parameters and FLOPs again and the machine that timed them: timings change from run to
run, so ``cost.json`` is the one output that is not byte-identical on rerun (the stage declares it
a DVC metric with ``cache: false``; ``per_image.csv``, ``summary.json`` and ``restored/`` are
byte-identical). Timings are the median over the test images (and variants) of one restoration
each, the first one excluded as warm-up.
"""

from __future__ import annotations

import io
import platform
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medrestore.cost import model_cost
from medrestore.data.prepare import safe_name
from medrestore.degradations import modcrop, noise_sigma, spec_scale, to_float, to_uint8
from medrestore.inference import model_scale, restore_array
from medrestore.io import (
    InputError,
    read_image,
    read_json,
    write_json_atomic,
    write_png_atomic,
    write_text_atomic,
)
from medrestore.metrics import (
    FULL_REFERENCE,
    LOWER_IS_BETTER,
    NO_REFERENCE,
    all_metrics,
)
from medrestore.models import BASELINES, load_model
from medrestore.vessels import VesselSegmenter, load_vessel_segmenter, vessel_scores

VESSEL_KEYS = ("auc", "dice", "thin_recall", "thin_recall_above_chance", "invented_rate")
VESSEL_COLUMNS = tuple(f"ref_{k}" for k in VESSEL_KEYS) + tuple(f"manual_{k}" for k in VESSEL_KEYS)
PAIRED_METRICS = (
    "psnr", "psnr_fov", "psnr_green_fov", "ssim", "ssim_fov", "niqe", "brisque",
    "ref_auc", "ref_dice", "ref_thin_recall", "ref_invented_rate",
    "manual_auc", "manual_dice", "manual_thin_recall", "manual_invented_rate",
)
LOWER_BETTER = LOWER_IS_BETTER | {"ref_invented_rate", "manual_invented_rate"}
BEST_BASELINE_BY = "psnr_fov"


# ============================================================================= floor and baselines
def upsample_bicubic(image: np.ndarray, scale: int) -> np.ndarray:
    """Float H x W x C in [0, 1] upsampled ``scale`` times with PIL's bicubic filter, per channel."""
    from PIL import Image

    if scale == 1:
        return image.astype(np.float32, copy=True)
    h, w = image.shape[0] * scale, image.shape[1] * scale
    planes = [
        np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32), mode="F").resize((w, h), Image.Resampling.BICUBIC))
        for c in range(image.shape[2])
    ]
    return np.clip(np.stack(planes, axis=2), 0.0, 1.0).astype(np.float32)


def baseline_function(name: str) -> Callable[..., Any]:
    if name not in BASELINES:
        raise InputError(f"params.yaml: unknown baseline {name!r} in evaluate.baselines. Fix: use {', '.join(sorted(BASELINES))}.")
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


def bootstrap_ci(values: np.ndarray, seed: int, n: int = 2000, level: float = 0.95) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    if values.size == 1:
        return float(values[0]), float(values[0])
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n, values.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def paired_test(model_values: np.ndarray, baseline_values: np.ndarray, seed: int) -> dict[str, Any]:
    """Model minus baseline on the same images: n, mean difference, paired bootstrap 95 % CI,
    Wilcoxon signed-rank two-sided p-value and the smallest p possible with this n."""
    from scipy.stats import wilcoxon

    a, b = np.asarray(model_values, np.float64), np.asarray(baseline_values, np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    n = int(d.size)
    out: dict[str, Any] = {"n": n}
    if n == 0:
        return out
    lo, hi = bootstrap_ci(d, seed)
    nonzero = int(np.count_nonzero(d))
    if nonzero == 0:
        p = 1.0
    else:
        p = float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)
    out.update({
        "mean_diff": round(float(d.mean()), 6),
        "ci95": [round(lo, 6), round(hi, 6)],
        "wilcoxon_p": round(p, 6),
        "min_p": round(2.0 / 2.0**nonzero, 6) if nonzero else 1.0,
        "model_better": int(np.sum(d > 0)),
        "baseline_better": int(np.sum(d < 0)),
    })
    return out


def paired_tests(table: pd.DataFrame, seed: int) -> dict[str, Any]:
    """Every model against the best baseline (highest mean ``psnr_fov``) per test variant."""
    out: dict[str, Any] = {}
    for variant, grp in table.groupby("variant", sort=True):
        base = grp[grp["kind"] == "baseline"]
        if base.empty or not (grp["kind"] == "model").any():
            continue
        means = base.groupby("method")[BEST_BASELINE_BY].mean()
        best = str(means.idxmax()) if means.notna().any() else str(min(base["method"].unique()))
        ref = grp[grp["method"] == best].set_index("image_id")
        entry: dict[str, Any] = {"baseline": best, "chosen_by": f"highest mean {BEST_BASELINE_BY}", "models": {}}
        for model in sorted(grp.loc[grp["kind"] == "model", "method"].unique()):
            rows = grp[grp["method"] == model].set_index("image_id").reindex(ref.index)
            tests = {}
            for metric in PAIRED_METRICS:
                if metric in rows and rows[metric].notna().any() and ref[metric].notna().any():
                    t = paired_test(rows[metric].to_numpy(float), ref[metric].to_numpy(float), seed)
                    if t["n"]:
                        t["higher_is_better"] = metric not in LOWER_BETTER
                        tests[metric] = t
            entry["models"][model] = tests
        out[str(variant)] = entry
    return out


# ============================================================================= per image
def vessel_columns(image: np.ndarray, fov: np.ndarray, segmenter: VesselSegmenter, clean_ref: np.ndarray, manual: np.ndarray | None) -> dict[str, float]:
    score, binary = segmenter(image, fov)
    out = {f"ref_{k}": v for k, v in vessel_scores(score, binary, clean_ref, fov).items() if k in VESSEL_KEYS}
    if manual is not None:
        out.update({f"manual_{k}": v for k, v in vessel_scores(score, binary, manual, fov).items() if k in VESSEL_KEYS})
    return out


def _task_scale(corruption: dict, case: dict) -> int:
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


def _median_after_warmup(times: list[float]) -> float:
    return float(np.median(times[1:] if len(times) > 1 else times))


def evaluate_task(
    task: str,
    patches_dir: Path,
    corrupt_dir: Path,
    models_dir: Path,
    out_dir: Path,
    *,
    baselines: list[str],
    tile: int,
    overlap: int,
    seed: int,
    assets_dir: str | None = None,
    tracker=None,
    segmenter_dir: Path | None = None,
    device: str = "cpu",
) -> dict:
    """Write ``restored/<method>/<variant>/<id>.png``, ``per_image.csv``, ``summary.json`` and
    ``cost.json`` (timings) to ``out_dir``; return the summary."""
    patches_dir, corrupt_dir, models_dir, out_dir = map(Path, (patches_dir, corrupt_dir, models_dir, out_dir))
    meta = read_json(patches_dir / "patches.json")
    segmenter, seg_meta = load_vessel_segmenter(segmenter_dir, device=device)
    assert_test_unseen(meta, seg_meta.get("train_ids", []))
    corruption = read_json(corrupt_dir / "corruption.json")
    clean_by_id = {e["id"]: e for e in meta["test"]}
    if not corruption["test"]:
        raise InputError(f"{corrupt_dir / 'corruption.json'}: no test images. Fix: rerun the corrupt stage.")
    scale = _task_scale(corruption, corruption["test"][0])

    models, cost = {}, {}
    for d in sorted(p for p in models_dir.iterdir() if (p / "model.json").is_file() and not p.name.startswith(".")) if models_dir.is_dir() else []:
        model, mmeta = load_model(d)
        s = model_scale(model, mmeta)
        if s != scale:
            raise InputError(f"{d}: the model upscales x{s} but task {task} is x{scale}. Fix: retrain it for this task.")
        models[d.name] = model
        cost[d.name] = {"kind": "model", "scale": s, **model_cost(model, scale=s)}
    fns = {name: baseline_function(name) for name in baselines}
    for name in fns:
        cost[name] = {"kind": "baseline", "parameters": 0}

    rows: list[dict] = []
    timings: dict[str, list[float]] = {}

    def timed(name: str, pixels: int, fn: Callable[..., np.ndarray], *args: Any, **kwargs: Any) -> np.ndarray:
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        timings.setdefault(name, []).append((time.perf_counter() - t) / (pixels / 1e6))
        return out

    clean_cache: dict[str, tuple] = {}
    for case in corruption["test"]:
        entry = clean_by_id[case["id"]]
        s = _task_scale(corruption, case)
        if case["id"] not in clean_cache:
            clean = modcrop(read_image(patches_dir / entry["image"], "RGB"), s)
            fov = modcrop(read_image(patches_dir / entry["fov"], "L") > 127, s)
            manual = modcrop(read_image(patches_dir / entry["vessels"], "L") > 127, s) if entry.get("vessels") else None
            clean_vessels = segmenter(clean, fov)[1]
            clean_cache[case["id"]] = (clean, fov, manual, clean_vessels)
        clean, fov, manual, clean_vessels = clean_cache[case["id"]]
        degraded = read_image(corrupt_dir / case["file"], "RGB")
        if degraded.shape[0] * s != clean.shape[0] or degraded.shape[1] * s != clean.shape[1]:
            raise InputError(
                f"{corrupt_dir / case['file']}: {degraded.shape[:2]} times {s} is not the clean test image's {clean.shape[:2]}. "
                "Fix: rerun the corrupt stage."
            )
        sigma = case_sigma(case.get("params", {}), case.get("spec"))
        base = {"task": task, "image_id": case["id"], "variant": case["variant"], "sigma": sigma, "scale": s}
        low = to_float(degraded)
        pixels = clean.shape[0] * clean.shape[1]
        outputs: dict[str, tuple[str, np.ndarray]] = {"degraded": ("input", to_uint8(upsample_bicubic(low, s)))}
        for name, model in models.items():
            restored = timed(name, pixels, restore_array, model, low, tile=tile, overlap=overlap, device=device, scale=s)
            outputs[name] = ("model", to_uint8(restored))
        for name, fn in fns.items():
            restored = timed(name, pixels, run_baseline, fn, low, sigma, s)
            outputs[name] = ("baseline", to_uint8(restored))
        for method, (kind, restored) in outputs.items():
            write_png_atomic(out_dir / "restored" / method / case["variant"] / f"{safe_name(case['id'])}.png", restored)
            rows.append({**base, "method": method, "kind": kind, **all_metrics(restored, clean, fov, assets_dir),
                         **vessel_columns(restored, fov, segmenter, clean_vessels, manual)})
        clean_row = {**base, "method": "clean", "kind": "reference", **all_metrics(clean, None, None, assets_dir)}
        if manual is not None:  # the ceiling: the segmenter on the clean image against the manual mask
            clean_row.update(vessel_columns(clean, fov, segmenter, clean_vessels, manual))
        rows.append(clean_row)

    table = pd.DataFrame(rows)
    metric_cols = FULL_REFERENCE + NO_REFERENCE + VESSEL_COLUMNS
    for col in metric_cols:
        if col not in table:
            table[col] = np.nan
    order = ["task", "method", "kind", "image_id", "variant", "sigma", "scale", *metric_cols]
    table = table[order]
    buf = io.StringIO()
    table.to_csv(buf, index=False, float_format="%.6f", lineterminator="\n")
    write_text_atomic(out_dir / "per_image.csv", buf.getvalue())

    summary: dict = {
        "task": task,
        "scale": scale,
        "floor": "degraded input" + (f", upsampled x{scale} with PIL bicubic" if scale > 1 else ""),
        "segmenter": segmenter.describe(),
        "methods": {},
        "test_images": sorted(clean_by_id),
        "variants": sorted({c["variant"] for c in corruption["test"]}),
    }
    for (method, variant), grp in table.groupby(["method", "variant"], sort=True):
        stats = {"kind": grp["kind"].iloc[0], "n": len(grp)}
        for col in metric_cols:
            vals = grp[col].to_numpy(dtype=float)
            if np.isfinite(vals).any():
                lo, hi = bootstrap_ci(vals, seed)
                stats[col] = {"mean": round(float(np.nanmean(vals[np.isfinite(vals)])), 6), "ci95": [round(lo, 6), round(hi, 6)]}
        summary["methods"].setdefault(method, {})[variant] = stats
    summary["paired_tests"] = paired_tests(table, seed)
    cost = {k: {kk: (round(vv, 1) if isinstance(vv, float) else vv) for kk, vv in v.items()} for k, v in sorted(cost.items())}
    summary["cost"] = {
        "note": "parameters; FLOPs per output megapixel (torch.utils.flop_counter, 256 px input); seconds per megapixel are in cost.json",
        "methods": cost,
    }
    write_json_atomic(out_dir / "summary.json", summary)

    s_per_mpix = {m: round(_median_after_warmup(v), 6) for m, v in sorted(timings.items())}
    write_json_atomic(out_dir / "cost.json", {
        "task": task,
        "methods": {m: {**cost.get(m, {}), "seconds_per_mpix": s_per_mpix[m], "timed_runs": len(timings[m])} for m in s_per_mpix},
        "rule": "median over test images of one restoration each, first excluded as warm-up; per output megapixel",
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        **({"gpu": torch.cuda.get_device_name()} if str(device).startswith("cuda") and torch.cuda.is_available() else {}),
    })
    if tracker is not None:
        tracker.log_metrics({f"{m}.s_per_mpix": v for m, v in s_per_mpix.items()})
        tracker.log_metrics({f"{m}.flops_per_mpix": v["flops_per_mpix"] for m, v in cost.items() if "flops_per_mpix" in v})
        for method, variants in summary["methods"].items():
            for variant, stats in variants.items():
                tracker.log_metrics({f"{method}.{variant}.{k}": v["mean"] for k, v in stats.items() if isinstance(v, dict) and np.isfinite(v["mean"])})
    return summary
