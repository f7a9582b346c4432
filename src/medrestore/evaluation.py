"""The evaluate stage: restore every test image with every method and score it.

Rows of the per-image table: the degraded input (the floor), every trained model of the task,
every classical baseline, and the clean image (the ceiling, no-reference metrics only).
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pandas as pd

from medrestore.data.prepare import safe_name
from medrestore.degradations import to_float, to_uint8
from medrestore.inference import restore_array
from medrestore.io import InputError, read_image, read_json, write_json_atomic, write_png_atomic, write_text_atomic
from medrestore.metrics import FULL_REFERENCE, NO_REFERENCE, all_metrics
from medrestore.models import BASELINES, load_model
from medrestore.vessels import segment_frangi, vessel_scores

# Vessel scores inside the FOV. ``ref_*``: against the Frangi segmentation of the clean image (every
# source); ``manual_*``: against the dataset's manual vessel mask (when it has one).
VESSEL_KEYS = ("auc", "dice", "thin_recall", "thin_recall_above_chance", "invented_rate")
VESSEL_COLUMNS = tuple(f"ref_{k}" for k in VESSEL_KEYS) + tuple(f"manual_{k}" for k in VESSEL_KEYS)


def vessel_columns(restored: np.ndarray, fov: np.ndarray, clean_ref: np.ndarray, manual: np.ndarray | None) -> dict[str, float]:
    score, binary = segment_frangi(restored, fov)
    out = {f"ref_{k}": v for k, v in vessel_scores(score, binary, clean_ref, fov).items() if k in VESSEL_KEYS}
    if manual is not None:
        out.update({f"manual_{k}": v for k, v in vessel_scores(score, binary, manual, fov).items() if k in VESSEL_KEYS})
    return out


def assert_test_unseen(patches_meta: dict) -> None:
    """Test images never appear in training or validation: checked by image (or region) id."""
    test = set(patches_meta["splits"]["test"])
    for split in ("train", "val"):
        overlap = test & set(patches_meta["splits"][split])
        if overlap:
            raise AssertionError(f"test images also in {split}: {sorted(overlap)}")


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
) -> dict:
    patches_dir, corrupt_dir, models_dir, out_dir = map(Path, (patches_dir, corrupt_dir, models_dir, out_dir))
    meta = read_json(patches_dir / "patches.json")
    assert_test_unseen(meta)
    corruption = read_json(corrupt_dir / "corruption.json")
    clean_by_id = {e["id"]: e for e in meta["test"]}

    models = {}
    for d in sorted(p for p in models_dir.iterdir() if (p / "model.json").is_file()) if models_dir.is_dir() else []:
        models[d.name] = load_model(d)[0]
    for b in baselines:
        if b not in BASELINES:
            raise InputError(f"params.yaml: unknown baseline {b!r} in evaluate.baselines. Fix: use {', '.join(BASELINES)}.")

    rows: list[dict] = []
    timings: dict[str, list[float]] = {}
    for case in corruption["test"]:
        entry = clean_by_id[case["id"]]
        clean = read_image(patches_dir / entry["image"], "RGB")
        fov = read_image(patches_dir / entry["fov"], "L") > 127
        clean_vessels = segment_frangi(clean, fov)[1]
        manual = read_image(patches_dir / entry["vessels"], "L") > 127 if entry.get("vessels") else None
        degraded = read_image(corrupt_dir / case["file"], "RGB")
        sigma = float(case["params"].get("sigma", 0.0))
        base = {"task": task, "image_id": case["id"], "variant": case["variant"], "sigma": sigma}
        outputs: dict[str, tuple[str, np.ndarray]] = {"degraded": ("input", degraded)}
        for name, model in models.items():
            t = time.perf_counter()
            outputs[name] = ("model", to_uint8(restore_array(model, to_float(degraded), tile=tile, overlap=overlap)))
            timings.setdefault(name, []).append((time.perf_counter() - t) / (clean.shape[0] * clean.shape[1] / 1e6))
        for name in baselines:
            t = time.perf_counter()
            outputs[name] = ("baseline", to_uint8(BASELINES[name](to_float(degraded), sigma)))
            timings.setdefault(name, []).append((time.perf_counter() - t) / (clean.shape[0] * clean.shape[1] / 1e6))
        for method, (kind, restored) in outputs.items():
            write_png_atomic(out_dir / "restored" / method / case["variant"] / f"{safe_name(case['id'])}.png", restored)
            rows.append({**base, "method": method, "kind": kind, **all_metrics(restored, clean, fov, assets_dir),
                         **vessel_columns(restored, fov, clean_vessels, manual)})
        clean_row = {**base, "method": "clean", "kind": "reference", **all_metrics(clean, None, None, assets_dir)}
        if manual is not None:  # the ceiling: the segmenter on the clean image against the manual mask
            clean_row.update(vessel_columns(clean, fov, clean_vessels, manual))
        rows.append(clean_row)

    table = pd.DataFrame(rows)
    metric_cols = FULL_REFERENCE + NO_REFERENCE + VESSEL_COLUMNS
    for col in metric_cols:
        if col not in table:
            table[col] = np.nan
    order = ["task", "method", "kind", "image_id", "variant", "sigma", *metric_cols]
    table = table[order]
    buf = io.StringIO()
    table.to_csv(buf, index=False, float_format="%.6f", lineterminator="\n")
    write_text_atomic(out_dir / "per_image.csv", buf.getvalue())

    summary: dict = {"task": task, "methods": {}, "test_images": sorted(clean_by_id), "variants": sorted({c["variant"] for c in corruption["test"]})}
    for (method, variant), grp in table.groupby(["method", "variant"], sort=True):
        stats = {"kind": grp["kind"].iloc[0], "n": int(len(grp))}
        for col in metric_cols:
            vals = grp[col].to_numpy(dtype=float)
            if np.isfinite(vals).any():
                lo, hi = bootstrap_ci(vals, seed)
                stats[col] = {"mean": round(float(np.nanmean(vals)), 6), "ci95": [round(lo, 6), round(hi, 6)]}
        summary["methods"].setdefault(method, {})[variant] = stats
    write_json_atomic(out_dir / "summary.json", summary)
    if tracker is not None:
        tracker.log_metrics({f"{m}.s_per_mpix": float(np.median(v)) for m, v in timings.items()})
        for method, variants in summary["methods"].items():
            for variant, stats in variants.items():
                tracker.log_metrics({f"{method}.{variant}.{k}": v["mean"] for k, v in stats.items() if isinstance(v, dict) and np.isfinite(v["mean"])})
    return summary
