"""evaluate TASK: restore the test images with every model and baseline; score them.

Writes artifacts/eval/TASK/{per_image.csv,summary.json,restored/} (byte-identical on rerun) and
cost.json beside them (machine-dependent timings; an output with `cache: false`, not a metric). What is
measured and how it is summarised (floor, baselines, vessels, statistics, cost) is in
:mod:`medrestore.evaluation.scoring`; this module reads the stage's inputs and writes its outputs."""

from __future__ import annotations

import io
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medrestore.core.io import (
    InputError,
    atomic_dir,
    read_image,
    read_json,
    read_mask,
    repo_path,
    write_json_atomic,
    write_png_atomic,
    write_text_atomic,
)
from medrestore.data.names import safe_name
from medrestore.degradations import modcrop, to_float, to_uint8, upsample_bicubic
from medrestore.evaluation.cost import model_cost
from medrestore.evaluation.metrics import headline_scores
from medrestore.evaluation.scoring import (
    assert_test_unseen,
    baseline_function,
    baselines_for,
    case_sigma,
    median_after_warmup,
    paired_tests,
    per_image_table,
    rounded_cost,
    run_baseline,
    score_clean,
    score_restored,
    subjects_by_image,
    summarise,
    task_scale,
)
from medrestore.models import load_model
from medrestore.pipeline.paths import MODELS, PATCHES, SCORING_SEGMENTER, SEGMENTER, corrupt_dir, eval_dir
from medrestore.pipeline.stage import arg, params, run
from medrestore.serving.inference import model_scale, restore_array
from medrestore.tracking.runs import file_md5, log_datasets, relative_path, run_by_output, tag_outputs
from medrestore.vessels import load_vessel_segmenter


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
    scoring_segmenter_dir: Path | None = None,
) -> dict:
    """Write ``restored/<method>/<variant>/<id>.png``, ``per_image.csv``, ``summary.json`` and
    ``cost.json`` (timings) to ``out_dir``; return the summary."""
    patches_dir, corrupt_dir, models_dir, out_dir = map(Path, (patches_dir, corrupt_dir, models_dir, out_dir))
    meta = read_json(patches_dir / "patches.json")
    segmenter, scoring_segmenter = _load_segmenters(meta, segmenter_dir, scoring_segmenter_dir, device)
    corruption = read_json(corrupt_dir / "corruption.json")
    clean_by_id = {e["id"]: e for e in meta["test"]}
    subjects = subjects_by_image(meta)
    scale = _test_scale(corruption, corrupt_dir)
    models, fns, cost = _load_methods(task, models_dir, scale, baselines)
    ctx = _Cases(task, patches_dir, corrupt_dir, out_dir, segmenter, scoring_segmenter, assets_dir, models, fns,
                 tile, overlap, device)
    rows = _score_cases(ctx, corruption, clean_by_id, subjects)

    table = _write_per_image(out_dir, rows)
    summary: dict = {
        "task": task,
        "scale": scale,
        "floor": "degraded input" + (f", upsampled x{scale} with PIL bicubic" if scale > 1 else ""),
        "segmenter": segmenter.describe(),
        **({"scoring_segmenter": scoring_segmenter.describe()} if scoring_segmenter is not None else {}),
        "methods": summarise(table, seed),
        "test_images": sorted(clean_by_id),
        "variants": sorted({c["variant"] for c in corruption["test"]}),
    }
    summary["paired_tests"] = paired_tests(table, seed)
    cost = rounded_cost(cost)
    summary["cost"] = {
        "note": "parameters; FLOPs per output megapixel (torch.utils.flop_counter, 256 px input); seconds per "
                "megapixel are in cost.json",
        "methods": cost,
    }
    write_json_atomic(out_dir / "summary.json", summary)
    s_per_mpix = _write_cost(out_dir, task, cost, ctx.timings, device)
    if tracker is not None:
        _log_metrics(tracker, summary, cost, s_per_mpix)
    return summary


# ============================================================================= inputs
def _load_segmenters(meta: dict, segmenter_dir: Path | None, scoring_segmenter_dir: Path | None,
                     device: str) -> tuple[Any, Any]:
    """The vessel segmenter and the independent scoring segmenter (None when ``scoring_segmenter_dir``
    holds no ``model.json``), each checked to have seen none of the test images."""
    segmenter, seg_meta = load_vessel_segmenter(segmenter_dir, device=device)
    assert_test_unseen(meta, seg_meta.get("train_ids", []))
    scoring_segmenter = None
    # the independent segmenter (indep_ columns)
    if scoring_segmenter_dir is not None and Path(scoring_segmenter_dir, "model.json").is_file():
        scoring_segmenter, scoring_meta = load_vessel_segmenter(scoring_segmenter_dir, device=device)
        assert_test_unseen(meta, scoring_meta.get("train_ids", []))
    return segmenter, scoring_segmenter


def _test_scale(corruption: dict, corrupt_dir: Path) -> int:
    """The task's upscaling factor, read from its first test case; an error when there is none."""
    if not corruption["test"]:
        raise InputError(f"{corrupt_dir / 'corruption.json'}: no test images. Fix: rerun the corrupt stage.")
    return task_scale(corruption, corruption["test"][0])


def _load_methods(task: str, models_dir: Path, scale: int,
                  baselines: list[str]) -> tuple[dict[str, Any], dict[str, Callable], dict[str, dict]]:
    """The trained models of ``models_dir`` (each checked to upscale by ``scale``) and the baselines'
    functions, by name, and their cost entries (parameters, FLOPs)."""
    models, cost = {}, {}
    for d in (
        sorted(p for p in models_dir.iterdir() if (p / "model.json").is_file() and not p.name.startswith("."))
        if models_dir.is_dir()
        else []
    ):
        model, mmeta = load_model(d)
        s = model_scale(model, mmeta)
        if s != scale:
            raise InputError(
                f"{d}: the model upscales x{s} but task {task} is x{scale}. Fix: retrain it for this task."
            )
        models[d.name] = model
        cost[d.name] = {"kind": "model", "scale": s, **model_cost(model, scale=s)}
    fns = {name: baseline_function(name) for name in baselines}
    for name in fns:
        cost[name] = {"kind": "baseline", "parameters": 0}
    return models, fns, cost


# ============================================================================= per test case
@dataclass
class _Cases:
    """What every test case of one evaluation shares: the stage's folders, the segmenters, the methods
    and how to run them; the restorations' timings and the clean references, as they accumulate."""

    task: str
    patches_dir: Path
    corrupt_dir: Path
    out_dir: Path
    segmenter: Any
    scoring_segmenter: Any
    assets_dir: str | None
    models: dict[str, Any]
    fns: dict[str, Callable]
    tile: int
    overlap: int
    device: str
    timings: dict[str, list[float]] = field(default_factory=dict)
    clean_cache: dict[str, tuple] = field(default_factory=dict)

    def timed(self, name: str, pixels: int, fn: Callable[..., np.ndarray], *args: Any, **kwargs: Any) -> np.ndarray:
        """``fn(*args, **kwargs)``, its seconds per output megapixel appended to ``timings[name]``."""
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        self.timings.setdefault(name, []).append((time.perf_counter() - t) / (pixels / 1e6))
        return out


def _score_cases(ctx: _Cases, corruption: dict, clean_by_id: dict[str, dict], subjects: dict[str, str]) -> list[dict]:
    """The per-image rows of every test case, in ``corruption.json``'s order."""
    from tqdm.auto import tqdm

    rows: list[dict] = []
    # one step per test image and corruption, on a terminal only (tqdm's disable=None): quiet in CI and logs
    for case in tqdm(corruption["test"], desc=f"evaluate {ctx.task}", unit="image", disable=None):
        entry = clean_by_id[case["id"]]
        rows += _score_case(ctx, case, entry, task_scale(corruption, case), subjects[case["id"]])
    return rows


def _clean_reference(ctx: _Cases, case_id: str, entry: dict, s: int) -> tuple:
    """The clean test image, its FOV, its manual vessel mask (or None) and the segmenter's vessel
    map of it, cropped to a multiple of ``s``; computed once per image."""
    if case_id not in ctx.clean_cache:
        clean = modcrop(read_image(ctx.patches_dir / entry["image"], "RGB"), s)
        fov = modcrop(read_mask(ctx.patches_dir / entry["fov"]), s)
        manual = modcrop(read_mask(ctx.patches_dir / entry["vessels"]), s) if entry.get("vessels") else None
        clean_vessels = ctx.segmenter(clean, fov)[1]
        ctx.clean_cache[case_id] = (clean, fov, manual, clean_vessels)
    return ctx.clean_cache[case_id]


def _restore_all(ctx: _Cases, low: np.ndarray, sigma: float, s: int, pixels: int) -> dict[str, tuple[str, np.ndarray]]:
    """method -> (kind, restored image): the upsampled input (the floor), every model, every baseline."""
    outputs: dict[str, tuple[str, np.ndarray]] = {"degraded": ("input", to_uint8(upsample_bicubic(low, s)))}
    for name, model in ctx.models.items():
        restored = ctx.timed(name, pixels, restore_array, model, low, tile=ctx.tile, overlap=ctx.overlap,
                             device=ctx.device, scale=s)
        outputs[name] = ("model", to_uint8(restored))
    for name, fn in ctx.fns.items():
        restored = ctx.timed(name, pixels, run_baseline, fn, low, sigma, s)
        outputs[name] = ("baseline", to_uint8(restored))
    return outputs


def _score_case(ctx: _Cases, case: dict, entry: dict, s: int, subject: str) -> list[dict]:
    """Restore one degraded test image with every method, write the restorations and return one row
    per method and one for the clean image."""
    clean, fov, manual, clean_vessels = _clean_reference(ctx, case["id"], entry, s)
    degraded = read_image(ctx.corrupt_dir / case["file"], "RGB")
    if degraded.shape[0] * s != clean.shape[0] or degraded.shape[1] * s != clean.shape[1]:
        raise InputError(
            f"{ctx.corrupt_dir / case['file']}: {degraded.shape[:2]} times {s} is not the clean test image's "
            f"{clean.shape[:2]}. Fix: rerun the corrupt stage."
        )
    sigma = case_sigma(case.get("params", {}), case.get("spec"))
    base = {"task": ctx.task, "image_id": case["id"], "subject": subject, "variant": case["variant"],
            "sigma": sigma, "scale": s}
    outputs = _restore_all(ctx, to_float(degraded), sigma, s, clean.shape[0] * clean.shape[1])
    rows = []
    for method, (kind, restored) in outputs.items():
        write_png_atomic(ctx.out_dir / "restored" / method / case["variant"] / f"{safe_name(case['id'])}.png",
                         restored)
        rows.append({**base, "method": method, "kind": kind,
                     **score_restored(restored, clean, fov, ctx.segmenter, clean_vessels, manual, ctx.assets_dir,
                                      ctx.scoring_segmenter)})
    rows.append({**base, "method": "clean", "kind": "reference",
                 **score_clean(clean, fov, ctx.segmenter, clean_vessels, manual, ctx.assets_dir,
                               ctx.scoring_segmenter)})
    return rows


# ============================================================================= outputs
def _write_per_image(out_dir: Path, rows: list[dict]) -> Any:
    """``per_image.csv``: the rows as :func:`medrestore.evaluation.scoring.per_image_table` orders them;
    returns that table."""
    table = per_image_table(rows)
    buf = io.StringIO()
    table.to_csv(buf, index=False, float_format="%.6f", lineterminator="\n")
    write_text_atomic(out_dir / "per_image.csv", buf.getvalue())
    return table


def _write_cost(out_dir: Path, task: str, cost: dict[str, dict], timings: dict[str, list[float]],
                device: str) -> dict[str, float]:
    """``cost.json``: each method's cost and median seconds per output megapixel, with the machine
    that timed them; returns method -> seconds per megapixel."""
    s_per_mpix = {m: round(median_after_warmup(v), 6) for m, v in sorted(timings.items())}
    write_json_atomic(
        out_dir / "cost.json",
        {
            "task": task,
            "methods": {
                m: {**cost.get(m, {}), "seconds_per_mpix": s_per_mpix[m], "timed_runs": len(timings[m])}
                for m in s_per_mpix
            },
            "rule": "median over test images of one restoration each, first excluded as warm-up; per output megapixel",
            "device": str(device),
            "torch_threads": torch.get_num_threads(),
            "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(),
            **(
                {"gpu": torch.cuda.get_device_name()}
                if str(device).startswith("cuda") and torch.cuda.is_available()
                else {}
            ),
        },
    )
    return s_per_mpix


def _log_metrics(tracker, summary: dict, cost: dict[str, dict], s_per_mpix: dict[str, float]) -> None:
    """The evaluation run's metrics: seconds and FLOPs per megapixel, then every method's mean score
    per corruption (``<method>.<variant>.<metric>``, finite means only)."""
    tracker.log_metrics({f"{m}.s_per_mpix": v for m, v in s_per_mpix.items()})
    tracker.log_metrics(
        {f"{m}.flops_per_mpix": v["flops_per_mpix"] for m, v in cost.items() if "flops_per_mpix" in v}
    )
    for method, variants in summary["methods"].items():
        for variant, stats in variants.items():
            tracker.log_metrics(
                {
                    f"{method}.{variant}.{k}": v["mean"]
                    for k, v in stats.items()
                    if isinstance(v, dict) and np.isfinite(v["mean"])
                }
            )


def main(argv: list[str] | None = None) -> None:
    """``evaluate TASK``: :func:`evaluate_task` on the stage's paths and ``evaluate`` params, the
    outputs written to a temporary folder and moved into place whole."""
    task = arg(argv, 0, "TASK")
    all_p = params()
    p = all_p["evaluate"]
    out = eval_dir(task)
    with run(f"evaluate@{task}", p, all_p) as tracker:
        datasets = log_datasets(tracker, [PATCHES, corrupt_dir(task)], "test")
        with atomic_dir(out) as tmp:
            summary = evaluate_task(
                task, PATCHES, corrupt_dir(task), MODELS / task, tmp,
                baselines=baselines_for(task, p["baselines"]), tile=p["tile"], overlap=p["overlap"], seed=all_p["seed"],
                assets_dir=str(repo_path(p["assets"])), tracker=tracker, segmenter_dir=SEGMENTER,
                scoring_segmenter_dir=SCORING_SEGMENTER,
                device=p.get("device", "cpu"),
            )
        tag_outputs(tracker, [out / "per_image.csv", out / "summary.json", out / "cost.json", out / "restored"])
        for name in ("per_image.csv", "summary.json"):
            if tracker is not None:
                tracker.log_artifact(out / name)
        test_set = relative_path(corrupt_dir(task))
        log_test_scores(tracker, task, summary, MODELS / task,
                        (test_set, datasets[test_set]) if test_set in datasets else None)


def log_test_scores(tracker, task: str, summary: dict, models_dir: Path,
                    dataset: tuple[str, str] | None = None) -> dict[str, str]:
    """Log each trained model's test scores (:func:`medrestore.evaluation.metrics.headline_scores`:
    ``test_<variant>_<metric>``,
    e.g. ``test_s25_psnr_fov``) to the MLflow run that trained it: the finished run tagged
    ``out_md5:<models_dir>/<model>/model.safetensors`` with the md5 of the weights scored here, and to the
    model it logged (tag ``model_uri``), linked to ``dataset`` (name, digest: the test images). A model
    whose training run is not in the store (its weights came from the DVC cache) gets them in a child
    run of the evaluation run, named ``evaluate@<task> <model>`` and tagged ``model``. Returns model ->
    id of the run that holds its scores; failed calls are counted by ``tracker``."""
    if tracker is None or tracker.run_id is None:
        return {}
    import time

    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    client = MlflowClient()
    link = {"dataset_name": dataset[0], "dataset_digest": dataset[1]} if dataset else {}
    now = int(time.time() * 1000)
    done: dict[str, str] = {}
    for method, variants in sorted(summary["methods"].items()):
        weights = Path(models_dir) / method / "model.safetensors"
        if next(iter(variants.values()), {}).get("kind") != "model" or not weights.is_file():
            continue
        md5, failed = file_md5(weights), len(tracker.failures)
        trained = tracker.call(f"find the training run of {method}", run_by_output, client, relative_path(weights), md5)
        if trained is not None:
            run_id = trained.info.run_id
            model_uri = trained.data.tags.get("model_uri", "")
            model_id = model_uri.split("/", 1)[1] if model_uri.startswith("models:/m-") else None
        else:
            child = tracker.call(f"child run of {method}", client.create_run, mlflow.active_run().info.experiment_id,
                                 run_name=f"evaluate@{task} {method}",
                                 tags={"mlflow.parentRunId": tracker.run_id, "model": method, "task": task,
                                       "model_md5": md5})
            if child is None:
                continue
            run_id, model_id = child.info.run_id, None
        metrics = [Metric(k, v, now, 0, model_id=model_id,
                          **link) for k, v in sorted(headline_scores(summary, method).items())]
        tags = [RunTag("test_eval_run_id", tracker.run_id), RunTag("test_eval_stage", f"evaluate@{task}")]
        tracker.call(f"log the test scores of {method}", client.log_batch, run_id, metrics=metrics, tags=tags)
        if trained is None:
            tracker.call(f"end the child run of {method}", client.set_terminated, run_id)
        if len(tracker.failures) == failed:
            done[method] = run_id
    return done
