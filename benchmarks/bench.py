"""``make bench``: speed and memory figures, each measured in one run against its reference.

Every comparison interleaves its two sides (A, B, A, B, ...) after a warm-up and reports medians,
so load on the machine affects both sides alike. Results go to ``reports/bench.json`` and
``reports/bench.md``. ``--quick`` is the reduced size CI runs; the full size is run by hand. The
harness lives outside the library; the report renders ``bench.json`` itself
(:mod:`medrestore.report.performance`, whose :func:`sections` also make ``bench.md``).

    python -m benchmarks.bench [--quick] [--out reports]     (from the repository root)

The sections that run the pipeline's stages (patchify at scale, ``dvc repro``) are in
``benchmarks/bench_pipeline.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_pipeline import (
    bench_dvc_noop,
    bench_patchify,
    bench_repro,
)
from medrestore.core.io import write_json_atomic, write_text_atomic
from medrestore.report.markup import md_table
from medrestore.report.performance import sections


def _interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each function, called in turn ``repeats`` times after ``warmup`` rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in times.items()}


def _test_image(size: int) -> np.ndarray:
    """A real fundus photograph (scikit-image's), centre-cropped and resized to ``size``."""
    from skimage import data
    from skimage.transform import resize

    img = data.retina()
    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2 : (h + s) // 2, (w - s) // 2 : (w + s) // 2]
    return (resize(img, (size, size), anti_aliasing=True) * 255).round().astype(np.uint8)


# --------------------------------------------------------------------------- inference
def bench_inference(models: list[str], size: int, tile: int, repeats: int, compile: bool = False) -> dict:
    """Seconds per megapixel of output of each network: untiled, tiled (overlap 32), and the
    optimisations. Every network outputs a ``size`` px image: a super-resolution network (``scale``
    s) is given the ``size / s`` px reduction, as in its use, and its tiles are ``tile / s`` px.
    ``compile``: also ``torch.compile`` (inductor) of the folded channels-last network, timed after
    its compilation (whose seconds are reported apart: paid once per process and input shape)."""
    from medrestore.models import build_model
    from medrestore.serving.bn_folding import fold_batchnorm
    from medrestore.serving.inference import restore_array

    mpix = size * size / 1e6
    out = {}
    for name in models:
        torch.manual_seed(0)
        model = build_model(name).eval()
        scale = int(getattr(model, "scale", 1) or 1)
        image = _test_image(size // scale).astype(np.float32) / 255.0
        x = torch.from_numpy(image.transpose(2, 0, 1).copy())[None]
        folded, n_folded = fold_batchnorm(model)
        folded_cl = folded.to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)

        def untiled(m=model, x=x):
            with torch.inference_mode():
                m(x)

        def untiled_no_grad(m=model, x=x):
            with torch.no_grad():
                m(x)

        fns = {
            "untiled": untiled,
            "untiled_no_grad": untiled_no_grad,
            "tiled": lambda m=model, im=image, t=tile // scale, s=scale: restore_array(
                m, im, tile=t, overlap=32 // s, optimise=False
            ),
            "bn_folded": lambda m=folded: untiled(m),
            "bn_folded_channels_last": lambda m=folded_cl, x=x_cl: _run(m, x),
        }
        if n_folded == 0:
            fns.pop("bn_folded")
        compile_seconds = None
        if compile:
            compiled = torch.compile(folded_cl)
            t0 = time.perf_counter()
            _run(compiled, x_cl)
            compile_seconds = time.perf_counter() - t0
            fns["compiled"] = lambda m=compiled, x=x_cl: _run(m, x)
        t = _interleaved(fns, repeats)
        rec = {k: round(v / mpix, 4) for k, v in t.items()}
        rec["tiling_overhead"] = round(t["tiled"] / t["untiled"] - 1, 4)
        rec["inference_mode_speedup"] = round(t["untiled_no_grad"] / t["untiled"], 4)
        if "bn_folded" in t:
            rec["bn_folding_speedup"] = round(t["untiled"] / t["bn_folded"], 4)
        rec["bn_folded_channels_last_speedup"] = round(t["untiled"] / t["bn_folded_channels_last"], 4)
        rec["bn_pairs_folded"] = n_folded
        rec["input_size"] = size // scale
        if compile_seconds is not None:
            rec["compile_seconds"] = round(compile_seconds, 2)
            rec["compiled_vs_bn_folded_channels_last"] = round(t["bn_folded_channels_last"] / t["compiled"], 4)
        out[name] = rec
    return {"image_size": size, "tile": tile, "unit": "seconds per megapixel of output (median)", "models": out}


def _run(model, x):
    with torch.inference_mode():
        model(x)


def bench_baselines(names: list[str], size: int, repeats: int) -> dict:
    from medrestore.models import BASELINES

    image = _test_image(size).astype(np.float32) / 255.0
    noisy = np.clip(image + np.random.default_rng(0).normal(0, 25 / 255, image.shape).astype(np.float32), 0, 1)
    t = _interleaved({n: (lambda n=n: BASELINES[n](noisy, 25.0)) for n in names}, repeats, warmup=0)
    return {"image_size": size, "seconds_per_mpix": {n: round(v / (size * size / 1e6), 4) for n, v in t.items()}}


# --------------------------------------------------------------------------- metrics
def bench_metrics(n_images: int, size: int, assets: str | None) -> dict:
    """Images per second of our metric set against calling pyiqa's metrics directly."""
    import pyiqa

    from medrestore.evaluation.metrics import _metric, all_metrics, asset_path

    clean = _test_image(size)
    rng = np.random.default_rng(1)
    noisy = [np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255).astype(np.uint8) for _ in range(n_images)]
    for name in ("psnr", "ssim", "niqe", "brisque"):
        _metric(name, assets)  # built once per process in both paths
    direct = {}
    for name in ("psnr", "ssim", "niqe", "brisque"):
        kwargs = {"pretrained_model_path": asset_path(name, assets)} if name in ("niqe", "brisque") else {}
        direct[name] = pyiqa.create_metric(name, device="cpu", **kwargs)

    def tensor(a):
        return torch.from_numpy(a.astype(np.float32).transpose(2, 0, 1) / 255.0)[None]

    def ours():
        for img in noisy:
            all_metrics(img, clean, None, assets)

    def pyiqa_direct():
        with torch.inference_mode():
            ref = tensor(clean)
            for img in noisy:
                x = tensor(img)
                direct["psnr"](x, ref)
                direct["ssim"](x, ref)
                direct["niqe"](x)
                direct["brisque"](x)

    t = _interleaved({"ours_all_metrics": ours, "pyiqa_psnr_ssim_niqe_brisque": pyiqa_direct}, repeats=3)
    return {
        "image_size": size,
        "images": n_images,
        "images_per_second": {k: round(n_images / v, 4) for k, v in t.items()},
        "note": "ours computes 13 metrics (PSNR RGB/Y/green, SSIM Y/colour, each also inside the FOV, NIQE, BRISQUE, "
                "entropy); pyiqa direct computes 4",
    }


# --------------------------------------------------------------------------- training
def _patches(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` real fundus patches (scikit-image's retina, inside its field of view)."""
    img = _test_image(768)
    rng = np.random.default_rng(seed)
    ys = rng.integers(192, 768 - 192 - size, n)
    xs = rng.integers(192, 768 - 192 - size, n)
    return np.stack([img[y : y + size, x : x + size] for y, x in zip(ys, xs, strict=True)])


def _noisy_patches(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` real fundus patches and their Gaussian-noise (sigma 25) versions: the training sections' data."""
    from medrestore.degradations import corrupt

    clean = _patches(n, size)
    return clean, np.stack([corrupt(c, {"kind": "gaussian", "sigma": 25}, [7, i])[0] for i, c in enumerate(clean)])


def _bare_loop(cfg, clean: np.ndarray, noisy: np.ndarray, steps: int, workers: int | None = None) -> float:
    """The same model, optimiser, schedule, loss, batches, augmentation and memory layout in a plain
    PyTorch loop: the reference the engine's overhead is measured against. Returns seconds.
    ``workers``: fetch the batches through a ``DataLoader`` with that many worker processes (the
    engine's loader, same sampler) instead of indexing the patches in the loop."""
    from medrestore.models import build_model
    from medrestore.training.config import make_optimizer, make_scheduler
    from medrestore.training.data import PairedPatches, StepBatchSampler
    from medrestore.training.losses import make_loss

    torch.manual_seed(cfg.seed)
    net = build_model(cfg.model, **cfg.model_kwargs).train()
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = make_optimizer(net.parameters(), cfg)
    sched = make_scheduler(opt, cfg)
    loss_fn = make_loss(cfg.loss, **cfg.loss_kwargs)
    ds = PairedPatches(clean, noisy)
    sampler = StepBatchSampler(len(ds), cfg.batch_size, cfg.seed)
    t = time.perf_counter()
    for step, (x, y) in enumerate(_batches(ds, sampler, steps, workers)):
        if cfg.channels_last:
            x, y = x.contiguous(memory_format=torch.channels_last), y.contiguous(memory_format=torch.channels_last)
        k = int(np.random.default_rng([cfg.seed, step, 8]).integers(0, 8))
        if k >= 4:
            x, y = x.flip(-1), y.flip(-1)
        x, y = torch.rot90(x, k % 4, (-2, -1)), torch.rot90(y, k % 4, (-2, -1))
        loss = loss_fn(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return time.perf_counter() - t


def _batches(ds, sampler, steps: int, workers: int | None):
    """``steps`` (clean, degraded) batches of ``sampler``: indexed in the loop (``workers`` None) or
    through a ``DataLoader`` with ``workers`` worker processes, as the engine loads them."""
    if workers is None:
        for step in range(steps):
            idx = sampler.batch_at(step)
            yield torch.stack([ds[i][0] for i in idx]), torch.stack([ds[i][1] for i in idx])
        return
    from torch.utils.data import DataLoader

    loader = DataLoader(ds, batch_sampler=sampler, num_workers=workers)
    yield from (xy for _, xy in zip(range(steps), loader, strict=False))


class _StepClock:
    """Times between consecutive optimiser steps of any optimiser in the process (a global step
    post-hook: the engine and the bare loop are timed by the same probe, no code of theirs changed)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self._handle = None

    def __enter__(self) -> _StepClock:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.stamps = []
        self._handle = register_optimizer_step_post_hook(lambda *_: self.stamps.append(time.perf_counter()))
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def steps(self) -> list[float]:
        return list(np.diff(self.stamps))


def bench_training(models: list[str], steps: int, batch: int, patch: int, repeats: int = 1, min_seconds: float = 0.0,
                   warmup: int = 3) -> dict:
    """Patches per second of our engine (``train_model``: Lightning, callbacks, checkpoints, curves,
    validation once at the end) against the bare loop on the same model, optimiser, batches and
    augmentation. Each optimiser step is timed (:class:`_StepClock`); a run's first ``warmup`` steps
    are dropped. Per-step cost = median step time over all runs of a side (robust to another
    process's bursts); the mean is reported beside it, as a cost paid every k steps (logging,
    checkpoints) raises the mean and not the median. Fixed cost = run time minus its steps. Runs
    alternate (engine, bare) ``repeats`` times; n is ``steps`` or, for a fast model, enough for the
    bare loop to take ``min_seconds``."""
    import tempfile

    from medrestore.training.config import TrainConfig
    from medrestore.training.engine import train_model

    clean, noisy = _noisy_patches(512, patch)
    vclean, vnoisy = clean[:32], noisy[:32]
    out = {}
    for name in models:
        def config(n: int, name=name) -> TrainConfig:
            return TrainConfig.from_params({"model": name, "batch_size": batch, "max_steps": n, "val_every": n,
                                            "ckpt_every": n,
                                            "progress_bar": False, "seed": 1, "lr": 3e-4})

        def ours(n: int) -> float:
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                train_model(config(n), (clean, noisy), (vclean, vnoisy), Path(tmp) / "out", Path(tmp) / "ckpt")
                return time.perf_counter() - t

        def bare(n: int) -> float:
            return _bare_loop(config(n), clean, noisy, n)

        n = steps
        if min_seconds > 0:
            n = max(steps, int(np.ceil(min_seconds / (bare(steps) / steps) / 10.0)) * 10)
        step_times: dict[str, list[float]] = {"ours": [], "bare": []}
        fixed: dict[str, list[float]] = {"ours": [], "bare": []}
        walls: dict[str, list[float]] = {"ours": [], "bare": []}
        for _ in range(repeats):
            for side, fn in (("ours", ours), ("bare", bare)):
                with _StepClock() as clock:
                    wall = fn(n)
                d = clock.steps()
                step_times[side] += d[warmup:]
                walls[side].append(round(wall, 3))
                fixed[side].append(wall - sum(d) * n / max(len(d), 1))
        med = {k: float(np.median(v)) for k, v in step_times.items()}
        mean = {k: float(np.mean(v)) for k, v in step_times.items()}
        out[name] = {
            "steps": n,
            "patches_per_second": {k: round(batch / v, 3) for k, v in med.items()},
            "step_ms_median": {k: round(v * 1e3, 2) for k, v in med.items()},
            "step_ms_mean": {k: round(v * 1e3, 2) for k, v in mean.items()},
            "engine_overhead_per_step": round(med["ours"] / med["bare"] - 1, 4),
            "engine_overhead_per_step_mean": round(mean["ours"] / mean["bare"] - 1, 4),
            "engine_fixed_seconds": round(float(np.median(fixed["ours"])) - float(np.median(fixed["bare"])), 3),
            "wall_seconds": walls,
        }
    return {"min_steps": steps, "min_seconds": min_seconds, "batch": batch, "patch": patch, "repeats": repeats,
            "warmup_steps": warmup,
            "goal_overhead": 0.05, "models": out,
            "note": "engine = Lightning loop + callbacks (curve, checkpoint, NaN guard) + one validation and the "
                    "output files; per-step times from an optimiser step hook, median over all runs (mean beside it); "
                    "fixed seconds = the engine's run time outside its steps (start-up, validation, writing outputs) "
                    "minus the bare loop's, paid once per run"}


# --------------------------------------------------------------------------- threads and data loading
def bench_threads(models: list[str], size: int, repeats: int, train_models: list[str], steps: int, batch: int,
                  patch: int,
                  threads: list[int] | None = None, workers: tuple[int, ...] = (0, 1, 2), pipeline_patches: int = 69434,
                  train_repeats: int | None = None) -> dict:
    """What the thread count and data loading are worth on this machine.

    Inference: seconds per megapixel of the kept path (batch norm folded, channels-last, one
    ``size`` px tile) at each torch intra-op thread count, interleaved. Training: median optimiser
    step of the bare loop at each thread count; data loading: the share of a step spent building
    its batch (indexing, stacking; the sampler's permutation also timed at ``pipeline_patches``, the
    default pipeline's training set) and the median step when batches come through the engine's
    ``DataLoader`` with 0, 1, 2 worker processes (first 3 steps of each run dropped: workers' start)."""
    from medrestore.models import build_model
    from medrestore.serving.bn_folding import prepare_for_inference
    from medrestore.training.config import TrainConfig
    from medrestore.training.data import PairedPatches, StepBatchSampler

    before = torch.get_num_threads()
    cores = os.cpu_count() or 1
    threads = threads or sorted({1, *[2**k for k in range(1, 8) if 2**k <= cores], cores})
    mpix = size * size / 1e6
    inference: dict = {}
    try:
        for name in models:
            torch.manual_seed(0)
            model = build_model(name).eval()
            scale = int(getattr(model, "scale", 1) or 1)
            image = _test_image(size // scale).astype(np.float32) / 255.0
            x = torch.from_numpy(image.transpose(2, 0, 1).copy())[None].contiguous(memory_format=torch.channels_last)
            net = prepare_for_inference(model)

            def at(n: int, net=net, x=x) -> None:
                torch.set_num_threads(n)
                _run(net, x)

            t = _interleaved({n: (lambda n=n: at(n)) for n in threads}, repeats)
            inference[name] = {str(n): round(v / mpix, 4) for n, v in t.items()}
            inference[name]["speedup_max_vs_1"] = round(t[1] / t[max(threads)], 3)
        torch.set_num_threads(before)
        clean, noisy = _noisy_patches(512, patch)
        training: dict = {}
        for name in train_models:
            cfg = TrainConfig.from_params({"model": name, "batch_size": batch, "max_steps": steps, "seed": 1,
                                           "lr": 3e-4})

            def median_step(n_threads: int, w: int | None, cfg=cfg) -> float:
                torch.set_num_threads(n_threads)
                with _StepClock() as clock:
                    _bare_loop(cfg, clean, noisy, steps, workers=w)
                return float(np.median(clock.steps()[3:]))

            ds, sampler = PairedPatches(clean, noisy), StepBatchSampler(len(clean), batch, 1)

            def fetch(ds=ds, sampler=sampler) -> None:
                next(_batches(ds, sampler, 1, None))

            fetch_s = _interleaved({"fetch": fetch}, 20)["fetch"]
            rec: dict = {"step_ms_by_threads": {}, "step_ms_by_workers": {}}
            for _ in range(train_repeats or repeats):  # interleave the settings; medians of the runs' medians
                for n in threads:
                    rec["step_ms_by_threads"].setdefault(str(n), []).append(median_step(n, None))
                for w in workers:
                    rec["step_ms_by_workers"].setdefault(str(w), []).append(median_step(before, w))
            for key in ("step_ms_by_threads", "step_ms_by_workers"):
                rec[key] = {k: round(float(np.median(v)) * 1e3, 2) for k, v in rec[key].items()}
            big = StepBatchSampler(pipeline_patches, batch, 1)
            rec["sampler_ms_at_pipeline_size"] = round(
                _interleaved({"s": lambda big=big: big.batch_at(0)}, 20)["s"] * 1e3, 3
            )
            rec["batch_fetch_ms"] = round(fetch_s * 1e3, 3)
            rec["batch_fetch_share"] = round(fetch_s * 1e3 / rec["step_ms_by_threads"][str(before)], 4)
            training[name] = rec
    finally:
        torch.set_num_threads(before)
    return {"threads": threads, "default_threads": before, "image_size": size, "steps": steps, "batch": batch,
            "patch": patch,
            "repeats": repeats, "train_repeats": train_repeats or repeats, "pipeline_patches": pipeline_patches,
            "inference_seconds_per_mpix": inference, "training": training}


# --------------------------------------------------------------------------- precision
def bench_precision(models: list[str], size: int, repeats: int, train_models: list[str], steps: int, batch: int,
                    patch: int,
                    train_repeats: int = 1, weights: Path | None = Path("artifacts/models/denoise-g25")) -> dict:
    """bf16 autocast against float32 on the device the benchmark runs on (CPU here: bf16 matrix
    units, AMX/AVX512-BF16, make it a candidate).

    Inference: seconds per megapixel of the kept path (BN folded, channels-last) in float32 and
    under ``torch.autocast(bfloat16)``, and the PSNR of the bf16 output against the float32 one.
    Where ``weights/<model>`` holds the pipeline's trained network, that network restores the test
    image with Gaussian noise (sigma 25) and both outputs are also scored against the clean image
    (an untrained network's output says little about what bf16 costs).
    Training: median optimiser step of our engine at ``precision`` ``32-true`` and ``bf16-mixed``
    (Lightning's autocast), and the validation PSNR each reaches after the same ``steps``."""
    import tempfile

    from medrestore.models import build_model, load_model
    from medrestore.serving.bn_folding import prepare_for_inference
    from medrestore.training.config import TrainConfig
    from medrestore.training.engine import train_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    mpix = size * size / 1e6
    inference: dict = {}
    clean_image = _test_image(size).astype(np.float32) / 255.0
    noisy_image = np.clip(clean_image + np.random.default_rng(25).normal(0, 25 / 255, clean_image.shape), 0,
                          1).astype(np.float32)

    def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
        return round(float(10 * np.log10(1 / max(float(((a - b) ** 2).mean()), 1e-20))), 2)

    for name in models:
        torch.manual_seed(0)
        trained = weights is not None and (Path(weights) / name / "model.safetensors").is_file()
        model = load_model(Path(weights) / name)[0] if trained else build_model(name).eval()
        x = torch.from_numpy(noisy_image.transpose(2, 0,
                                                   1).copy())[None].to(device).contiguous(memory_format=torch.channels_last)
        net = prepare_for_inference(model.to(device))

        def fp32(net=net, x=x):
            with torch.inference_mode():
                return net(x).float().clamp(0, 1)

        def bf16(net=net, x=x):
            with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16):
                return net(x).float().clamp(0, 1)

        t = _interleaved({"float32": fp32, "bf16_autocast": bf16}, repeats)
        out32, out16 = fp32(), bf16()
        rec = {**{k: round(v / mpix, 4) for k, v in t.items()},
               "bf16_speedup": round(t["float32"] / t["bf16_autocast"], 3),
               "bf16_psnr_vs_float32_db": psnr(out16, out32),
               "weights": str(Path(weights) / name) if trained else "untrained"}
        if trained:
            ref = torch.from_numpy(clean_image.transpose(2, 0, 1).copy())[None].to(device)
            rec["psnr_vs_clean_db"] = {"noisy": psnr(x.float(), ref), "float32": psnr(out32, ref),
                                       "bf16_autocast": psnr(out16, ref)}
        inference[name] = rec
    clean, noisy = _noisy_patches(512, patch)
    val = (clean[:64], noisy[:64])
    training: dict = {}
    for name in train_models:
        rec: dict = {"step_ms": {}, "val_psnr": {}}
        times: dict[str, list[float]] = {}
        for _ in range(train_repeats):
            for precision in ("32-true", "bf16-mixed"):
                cfg = TrainConfig.from_params({"model": name, "batch_size": batch, "max_steps": steps,
                                               "val_every": steps, "ckpt_every": steps,
                                               "progress_bar": False, "seed": 1, "lr": 3e-4, "precision": precision,
                                               "accelerator": "gpu" if device == "cuda" else "cpu"})
                with tempfile.TemporaryDirectory() as tmp, _StepClock() as clock:
                    m = train_model(cfg, (clean, noisy), val, Path(tmp) / "out", Path(tmp) / "ckpt")
                times.setdefault(precision, []).extend(clock.steps()[3:])
                rec["val_psnr"][precision] = m["final_val_psnr"]  # the same every run: seeded
        rec["step_ms"] = {k: round(float(np.median(v)) * 1e3, 2) for k, v in times.items()}
        rec["bf16_speedup"] = round(rec["step_ms"]["32-true"] / rec["step_ms"]["bf16-mixed"], 3)
        training[name] = rec
    return {"device": device, "image_size": size, "repeats": repeats, "steps": steps, "batch": batch, "patch": patch,
            "train_repeats": train_repeats, "inference": inference, "training": training}


# --------------------------------------------------------------------------- main
def cpu_model() -> dict:
    """The CPU's name and the vector / matrix extensions its kernels may use (trained weights and
    timings depend on them)."""
    name, flags = platform.processor() or "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name in ("?", "x86_64", ""):
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile", "neon", "sve")
    return {"name": name, "isa": [f for f in wanted if f in flags],
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
    }


def markdown(result: dict) -> str:
    lines = ["# medrestore benchmark", "", f"Machine: {json.dumps(result['machine'])}. Mode: {result['mode']}.", ""]
    for title, text, header, rows in sections(result):
        lines += [f"## {title}", ""] + ([text, ""] if text else [])
        if header:
            lines += md_table(header, rows)
    return "\n".join(lines)


SECTIONS = ("inference", "baselines", "metrics", "training", "threads", "precision", "patchify", "dvc_noop", "repro")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the reduced size CI runs")
    ap.add_argument("--out", default="reports")
    ap.add_argument("--assets", default="../shared/assets/pyiqa")
    ap.add_argument("--only", nargs="*",
                    help="sections to run (inference baselines metrics training threads precision patchify dvc_noop "
                         "repro); repro, the whole pipeline from nothing, runs in the full mode only unless named here")
    ap.add_argument("--mirror", default="../shared/datasets")
    ap.add_argument("--compile", action="store_true",
                    help="time torch.compile in the inference section also in --quick mode")
    ap.add_argument("--merge", action="store_true",
                    help="replace only the sections run in the existing OUT/bench.json, keep the others")
    args = ap.parse_args(argv)
    quick = args.quick
    sections = set(args.only or [s for s in SECTIONS if s != "repro" or not quick])
    mode = "quick" if quick else "full"
    result: dict = {"mode": mode, "machine": machine(), "section_modes": {}}
    if "inference" in sections:
        models = ["dncnn", "redae"] if quick else ["dncnn", "redae", "cdae", "irunet", "srresnet", "lapsrn"]
        result["inference"] = bench_inference(models, size=384 if quick else 768, tile=128 if quick else 256,
                                              repeats=3 if quick else 5,
                                              compile=args.compile or not quick)
    if "baselines" in sections:
        result["baselines"] = bench_baselines(["median", "nlmeans"] if quick else ["median", "nlmeans", "bm3d"],
                                              size=128 if quick else 256, repeats=1 if quick else 3)
    if "metrics" in sections:
        result["metrics"] = bench_metrics(2 if quick else 6, 256 if quick else 512, args.assets)
    if "training" in sections:
        result["training"] = bench_training(["redae"] if quick else ["redae", "dncnn", "irunet", "cdae"],
                                            steps=5 if quick else 20,
                                            batch=8 if quick else 16, patch=40, repeats=1 if quick else 3,
                                            min_seconds=0 if quick else 3.0)
    if "threads" in sections:
        result["threads"] = bench_threads(["dncnn"] if quick else ["dncnn", "redae", "irunet"],
                                          size=256 if quick else 512,
                                          repeats=1 if quick else 7, train_repeats=1 if quick else 3,
                                          train_models=["dncnn"] if quick else ["dncnn", "irunet"],
                                          steps=8 if quick else 30, batch=8 if quick else 16, patch=40)
    if "precision" in sections:
        result["precision"] = bench_precision(["dncnn"] if quick else ["dncnn", "redae", "irunet", "cdae"],
                                              size=256 if quick else 512,
                                              repeats=1 if quick else 7,
                                              train_models=["dncnn"] if quick else ["dncnn", "irunet"],
                                              steps=8 if quick else 40, batch=8 if quick else 16, patch=40,
                                              train_repeats=1 if quick else 2)
    if "patchify" in sections:
        result["patchify"] = bench_patchify(Path.cwd(), size=256 if quick else 768, stride=20 if quick else 10,
                                            mirror=args.mirror)
    if "dvc_noop" in sections:
        result["dvc_noop"] = bench_dvc_noop(Path.cwd())
    if "repro" in sections:
        result["repro"] = bench_repro(Path.cwd(), Path(args.mirror).parent)
    result["section_modes"] = {k: mode for k in SECTIONS if k in result}
    out = Path(args.out)
    if args.merge and (out / "bench.json").is_file():
        old = json.loads((out / "bench.json").read_text())
        modes = {**{k: old.get("mode", "?") for k in SECTIONS if k in old}, **old.get("section_modes", {}),
                 **result["section_modes"]}
        result = {**old, **result, "section_modes": modes}
        result["mode"] = (
            mode if set(modes.values()) == {mode} else "mixed: " + ", ".join(f"{k} {v}" for k, v in modes.items())
        )
    write_json_atomic(out / "bench.json", result)
    write_text_atomic(out / "bench.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
