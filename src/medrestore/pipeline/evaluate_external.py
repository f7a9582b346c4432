"""evaluate_external TASK: the task's trained models and classical baselines on images from other
cameras than the training set's (:mod:`medrestore.evaluation.external`), at one test corruption.

Writes artifacts/evaluate_external/TASK/{per_image.csv,summary.json}, byte-identical on rerun (no
timings, no restored images)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from medrestore.core.io import InputError, atomic_dir, write_json_atomic, write_text_atomic
from medrestore.degradations import corrupt, to_float, to_uint8
from medrestore.evaluation.external import (
    METRICS,
    NOISE_WORD,
    external_cases,
    score,
    seed_words,
    summarise_external,
)
from medrestore.evaluation.scoring import (
    baseline_function,
    baselines_for,
    case_sigma,
    run_baseline,
)
from medrestore.models import load_model
from medrestore.pipeline.paths import MODELS, PATCHES, external_dir
from medrestore.pipeline.stage import arg, params, run
from medrestore.serving.inference import model_scale, restore_array
from medrestore.tracking.runs import log_datasets, tag_outputs

COLUMNS = ("task", "method", "kind", "image_id", "source", "profile", "sigma", *METRICS)


def evaluate_external(
    task: str,
    patches_dir: Path,
    models_dir: Path,
    out_dir: Path,
    *,
    spec: dict,
    variant: str,
    baselines: list[str],
    seed: int,
    profiles: list[str],
    gamma_range,
    sample: bool,
    prepare: dict,
    tile: int = 512,
    overlap: int = 32,
    device: str = "cpu",
) -> dict:
    """Restore every external image (degraded by ``spec``) with every model of ``models_dir`` and
    every baseline; write ``per_image.csv`` and ``summary.json`` to ``out_dir``; return the summary."""
    models_dir, out_dir = Path(models_dir), Path(out_dir)
    models = _load_denoisers(models_dir)
    fns = {name: baseline_function(name) for name in baselines}
    cases = external_cases(patches_dir, seed=seed, profiles=profiles, gamma_range=gamma_range, sample=sample,
                           prepare=prepare)
    rows: list[dict] = []
    inputs = []
    for i, case in enumerate(cases):
        degraded, cparams = _degrade(task, variant, spec, case, seed_words(seed, NOISE_WORD, i))
        rows += _score_case(task, case, degraded, case_sigma(cparams, spec), models, fns, tile=tile, overlap=overlap,
                            device=device)
        inputs.append(_input_record(case))

    _write_per_image(out_dir, rows)
    summary = {
        "task": task,
        "variant": variant,
        "spec": spec,
        "what": "denoisers on photographs from other cameras: the task's test images recoloured to other cameras' "
                "channel statistics (one profile per image, seeded) and scikit-image's fundus photograph; PSNR / SSIM "
                "in the FOV",
        "images": inputs,
        "methods": summarise_external(rows, seed),
    }
    write_json_atomic(out_dir / "summary.json", summary)
    return summary


def _load_denoisers(models_dir: Path) -> dict:
    """name -> model: every trained model of ``models_dir``; an error for a super-resolution one."""
    models = {}
    for d in (
        sorted(p for p in models_dir.iterdir() if (p / "model.json").is_file() and not p.name.startswith("."))
        if models_dir.is_dir()
        else []
    ):
        model, mmeta = load_model(d)
        if model_scale(model, mmeta) != 1:
            raise InputError(f"{d}: a super-resolution model; evaluate_external scores denoisers. Fix: list only "
                             "denoising tasks in evaluate_external.tasks.")
        models[d.name] = model
    return models


def _degrade(task: str, variant: str, spec: dict, case: dict, words) -> tuple[np.ndarray, dict]:
    """``case``'s image corrupted by ``spec`` with the seed words ``words``, and the corruption's
    drawn params; an error naming the params entry when the spec fails or changes the image size."""
    clean, fov = case["image"], case["fov"]
    try:
        degraded, cparams = corrupt(clean, spec, words, fov)
    except (ValueError, TypeError, KeyError) as exc:
        raise InputError(
            f"params.yaml: corrupt.tasks.{task}.test.{variant}: {exc}. Fix: correct the spec."
        ) from exc
    if degraded.shape != clean.shape:
        raise InputError(f"params.yaml: corrupt.tasks.{task}.test.{variant} changes the image size. Fix: "
                         "evaluate_external takes denoising tasks only.")
    return degraded, cparams


def _score_case(task: str, case: dict, degraded: np.ndarray, sigma: float, models: dict, fns: dict, *,
                tile: int, overlap: int, device: str) -> list[dict]:
    """One row per method (the degraded input, every model, every baseline) for one external image
    degraded with noise ``sigma``."""
    clean, fov = case["image"], case["fov"]
    base = {"task": task, "image_id": case["id"], "source": case["source"], "profile": case["profile"] or "",
            "sigma": sigma}
    low = to_float(degraded)
    outputs = {"degraded": ("input", degraded)}
    for name, model in models.items():
        outputs[name] = ("model",
                         to_uint8(restore_array(model, low, tile=tile, overlap=overlap, device=device, scale=1)))
    for name, fn in fns.items():
        outputs[name] = ("baseline", to_uint8(run_baseline(fn, low, sigma, 1)))
    return [{**base, "method": method, "kind": kind, **score(restored, clean, fov)}
            for method, (kind, restored) in outputs.items()]


def _input_record(case: dict) -> dict:
    """What ``summary.json`` says of one external image: its source, colour profile and the clean
    image's channel means in the FOV."""
    means = case["image"][case["fov"]].astype(np.float64).mean(axis=0)
    return {"id": case["id"], "source": case["source"], "profile": case["profile"], "gamma": case["gamma"],
            "gain": case["gain"],
            "fov_channel_means": [round(float(v), 3) for v in means]}


def _write_per_image(out_dir: Path, rows: list[dict]) -> None:
    """``per_image.csv``: the rows by image and method, floats with 6 decimals."""
    buf = io.StringIO()
    buf.write(",".join(COLUMNS) + "\n")
    for r in sorted(rows, key=lambda r: (r["image_id"], r["method"])):
        buf.write(",".join(f"{r[c]:.6f}" if isinstance(r[c], float) else str(r[c]) for c in COLUMNS) + "\n")
    write_text_atomic(out_dir / "per_image.csv", buf.getvalue())


def main(argv: list[str] | None = None) -> None:
    """``evaluate_external TASK``: :func:`evaluate_external` on the stage's paths and params."""
    task = arg(argv, 0, "TASK")
    all_p = params()
    p = all_p.get("evaluate_external")
    if not p or task not in p["tasks"]:
        raise InputError(f"params.yaml: {task!r} is not in evaluate_external.tasks. Fix: add it there.")
    tasks = all_p["corrupt"]["tasks"]
    if task not in tasks or p["variant"] not in tasks[task]["test"]:
        raise InputError(f"params.yaml: corrupt.tasks.{task}.test has no variant {p['variant']!r}. Fix: set "
                         "evaluate_external.variant to one of the task's test variants.")
    ev = all_p["evaluate"]
    out = external_dir(task)
    with run(f"evaluate_external@{task}", p, all_p) as tracker:
        log_datasets(tracker, [PATCHES], "test")
        with atomic_dir(out) as tmp:
            summary = evaluate_external(
                task, PATCHES, MODELS / task, tmp, spec=tasks[task]["test"][p["variant"]], variant=p["variant"],
                baselines=baselines_for(task, ev["baselines"]), seed=all_p["seed"], profiles=list(p["profiles"]),
                gamma_range=p["gamma_range"], sample=bool(p.get("sample", True)), prepare=all_p["prepare"],
                tile=ev["tile"], overlap=ev["overlap"], device=ev.get("device", "cpu"),
            )
        if tracker is not None:
            tracker.log_metrics({f"external.{m}.{k}": v["all"][k]["mean"] for m, v in summary["methods"].items()
                                 for k in ("psnr_fov",
                                           "ssim_fov") if k in v.get("all", {}) and np.isfinite(v["all"][k]["mean"])})
            tracker.log_artifact(out / "per_image.csv")
        tag_outputs(tracker, [out])
