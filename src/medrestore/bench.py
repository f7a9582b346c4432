"""``make bench``: speed and memory figures, each measured in one run against its reference.

Every comparison interleaves its two sides (A, B, A, B, ...) after a warm-up and reports medians,
so load on the machine affects both sides alike. Results go to ``reports/bench.json`` and
``reports/bench.md``. ``--quick`` is the reduced size CI runs; the full size is run by hand.

    python -m medrestore.bench [--quick] [--out reports]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from medrestore.io import write_json_atomic, write_text_atomic


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
    from medrestore.inference import restore_array
    from medrestore.models import build_model
    from medrestore.speed import fold_batchnorm

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
            "tiled": lambda m=model, im=image, t=tile // scale: restore_array(m, im, tile=t, overlap=32 // scale, optimise=False),
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

    from medrestore.metrics import _metric, all_metrics, asset_path

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
        "note": "ours computes 13 metrics (PSNR RGB/Y/green, SSIM Y/colour, each also inside the FOV, NIQE, BRISQUE, entropy); pyiqa direct computes 4",
    }


# --------------------------------------------------------------------------- training
def _patches(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` real fundus patches (scikit-image's retina, inside its field of view)."""
    img = _test_image(768)
    rng = np.random.default_rng(seed)
    ys = rng.integers(192, 768 - 192 - size, n)
    xs = rng.integers(192, 768 - 192 - size, n)
    return np.stack([img[y : y + size, x : x + size] for y, x in zip(ys, xs, strict=True)])


def _bare_loop(cfg, clean: np.ndarray, noisy: np.ndarray, steps: int) -> float:
    """The same model, optimiser, schedule, loss, batches, augmentation and memory layout in a plain
    PyTorch loop: the reference the engine's overhead is measured against. Returns seconds."""
    from medrestore.losses import make_loss
    from medrestore.models import build_model
    from medrestore.training.config import make_optimizer, make_scheduler
    from medrestore.training.data import PairedPatches, StepBatchSampler

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
    for step in range(steps):
        idx = sampler.batch_at(step)
        x = torch.stack([ds[i][0] for i in idx])
        y = torch.stack([ds[i][1] for i in idx])
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

    from medrestore.degradations import corrupt
    from medrestore.training import TrainConfig, train_model

    clean = _patches(512, patch)
    noisy = np.stack([corrupt(c, {"kind": "gaussian", "sigma": 25}, [7, i])[0] for i, c in enumerate(clean)])
    vclean, vnoisy = clean[:32], noisy[:32]
    out = {}
    for name in models:
        def config(n: int, name=name) -> TrainConfig:
            return TrainConfig.from_params({"model": name, "batch_size": batch, "max_steps": n, "val_every": n, "ckpt_every": n,
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
    return {"min_steps": steps, "min_seconds": min_seconds, "batch": batch, "patch": patch, "repeats": repeats, "warmup_steps": warmup,
            "goal_overhead": 0.05, "models": out,
            "note": "engine = Lightning loop + callbacks (curve, checkpoint, NaN guard) + one validation and the output files; per-step "
                    "times from an optimiser step hook, median over all runs (mean beside it); fixed seconds = the engine's run time "
                    "outside its steps (start-up, validation, writing outputs) minus the bare loop's, paid once per run"}


# --------------------------------------------------------------------------- data stages
def bench_patchify(root: Path, size: int, stride: int, mirror: str) -> dict:
    """patchify and corrupt at 1x and 4x the CHASE_DB1 images: seconds, patches/s and peak RSS, each in
    a fresh process (``benchmarks/patchify_bench.py``)."""
    script = root / "benchmarks" / "patchify_bench.py"
    if not script.is_file():
        return {"skipped": f"{script} not found (run from the repository root)"}
    if not Path(mirror).is_dir():
        return {"skipped": f"{mirror}: no CHASE_DB1 mirror here"}
    cmd = [sys.executable, str(script), "--size", str(size), "--stride", str(stride), "--mirror", str(mirror)]
    res = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return {"failed": res.stderr[-2000:]}
    return json.loads(res.stdout[res.stdout.index("{") :])


# --------------------------------------------------------------------------- pipeline
def bench_dvc_noop(root: Path) -> dict:
    """``dvc repro`` when nothing changed (skipped when the pipeline is not up to date)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "--quiet"], cwd=root, env=env, capture_output=True, text=True, check=False)
    if status.returncode != 0:
        return {"skipped": "the pipeline is not up to date here (run `make repro` first)"}
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=root, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t
    return {"seconds": round(seconds, 3), "goal_seconds": 10, "ran_nothing": "Running stage" not in res.stdout, "returncode": res.returncode}


def bench_repro(root: Path, shared: Path, targets: list[str] | None = None) -> dict:
    """The whole default pipeline from nothing: ``dvc repro`` in a fresh ``git clone`` of HEAD, with
    an empty DVC cache and its own MLflow store, ``shared`` beside it as ``../shared`` (the
    environment is this one: ``make repro``'s install step is not timed). Gives wall seconds per
    stage and in all, and compares every output's md5 with this checkout's ``dvc.lock``.
    ``targets``: only these stages (and what they depend on)."""
    import tempfile

    if not (root / "dvc.yaml").is_file() or not (root / ".git").exists():
        return {"skipped": f"{root} is not a git checkout of the pipeline"}
    if not shared.is_dir():
        return {"skipped": f"{shared}: no shared folder (CHASE_DB1 mirror, pyiqa assets) here"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip())
    with tempfile.TemporaryDirectory(prefix="medrestore-bench-repro-") as tmp:
        (Path(tmp) / "shared").symlink_to(shared.resolve())
        clone = Path(tmp) / "medrestore"
        subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True, capture_output=True)
        (clone / "data").mkdir(exist_ok=True)  # as `make repro`: your own images' folder, empty
        stamps: list[tuple[str, float]] = []
        log: list[str] = []
        t0 = time.perf_counter()
        with subprocess.Popen([sys.executable, "-m", "dvc", "repro", *(targets or [])], cwd=clone, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
            for line in proc.stdout:
                log.append(line)
                if line.startswith("Running stage '"):
                    stamps.append((line.split("'")[1], time.perf_counter() - t0))
        total = time.perf_counter() - t0
        if proc.returncode != 0:
            return {"failed": "".join(log)[-3000:], "returncode": proc.returncode}
        compared = compare_locks(root / "dvc.lock", clone / "dvc.lock", {s for s, _ in stamps})
    return {
        "commit": commit,
        "checkout_had_uncommitted_changes": dirty,
        "seconds": round(total, 1),
        "stages": stage_seconds(stamps, total),
        "by_kind": _by_kind(stage_seconds(stamps, total)),
        **compared,
        "note": "fresh git clone, empty DVC cache, CHASE_DB1 from the shared mirror; per stage = from its "
                "'Running stage' line to the next (start-up and imports included)",
    }


def stage_seconds(stamps: list[tuple[str, float]], end: float) -> dict[str, float]:
    """Seconds of each stage from the times its 'Running stage' lines appeared (the last one ends at ``end``)."""
    ends = [t for _, t in stamps[1:]] + [end]
    return {name: round(stop - start, 1) for (name, start), stop in zip(stamps, ends)}


def _by_kind(stages: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, sec in stages.items():
        kind = name.split("@")[0]
        out[kind] = round(out.get(kind, 0.0) + sec, 1)
    return out


def compare_locks(ours: Path, theirs: Path, stages: set[str], timings: tuple[str, ...] = ("cost.json",)) -> dict:
    """Outputs of ``stages`` whose md5 in ``theirs`` differs from ``ours`` (both dvc.lock files).
    Outputs named in ``timings`` (the evaluate stage's measured seconds, kept out of DVC's cache)
    are listed apart: they are not meant to match."""
    import yaml

    def outs(path: Path) -> dict[str, str | None]:
        lock = yaml.safe_load(path.read_text())["stages"]
        return {f"{st}:{o['path']}": o.get("md5") for st in stages if st in lock for o in lock[st].get("outs", [])}

    a, b = outs(ours), outs(theirs)
    timed = sorted(k for k in b if k.endswith(timings))
    checked = [k for k in b if k not in timed]
    differing = sorted(k for k in checked if a.get(k) != b[k])
    return {"outputs_compared": len(checked), "outputs_identical": len(checked) - len(differing), "outputs_differing": differing,
            "timing_outputs": timed}


# --------------------------------------------------------------------------- main
def machine() -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
    }


Section = tuple[str, str, list[str], list[list[str]]]  # title, text, table header, table rows


def _x(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}x"


def sections(result: dict) -> list[Section]:
    """The benchmark as titled tables, for ``bench.md`` and the report's performance section."""
    out: list[Section] = []
    inf = result.get("inference")
    if inf:
        rows = []
        for m, r in inf["models"].items():
            rows.append([m, str(r["untiled"]), str(r["tiled"]), f"{r['tiling_overhead']:+.1%}", _x(r["inference_mode_speedup"]),
                         str(r.get("bn_folded", "–")), str(r["bn_folded_channels_last"]), _x(r["bn_folded_channels_last_speedup"]),
                         f"{r['compiled']} ({r['compiled_vs_bn_folded_channels_last']:.2f}x)" if "compiled" in r else "–",
                         str(r.get("compile_seconds", "–"))])
        out.append((f"Inference, {inf['image_size']} px fundus image out, seconds per megapixel",
                    f"Median of the runs; tiles of {inf['tile']} px with 32 px overlap (super-resolution networks: given the "
                    f"reduced image, tiles and overlap in its pixels). Kept: batch-norm folding + channels-last.",
                    ["model", "untiled", "tiled", "tiling overhead", "no_grad / inference_mode", "BN folded", "BN folded + channels-last",
                     "speed-up", "torch.compile (after compiling)", "compile s"], rows))
    base = result.get("baselines")
    if base:
        out.append((f"Classical baselines, {base['image_size']} px, seconds per megapixel", "", ["baseline", "s/MPix"],
                    [[k, str(v)] for k, v in base["seconds_per_mpix"].items()]))
    met = result.get("metrics")
    if met:
        out.append((f"Metrics, {met['image_size']} px, images per second", met["note"], ["path", "images/s"],
                    [[k, str(v)] for k, v in met["images_per_second"].items()]))
    tr = result.get("training")
    if tr:
        rows = [[m, str(r["steps"] if "step_ms_median" in r else r.get("steps", "")), str(r["patches_per_second"]["bare"]),
                 str(r["patches_per_second"]["ours"]), f"{r['engine_overhead_per_step']:+.1%}",
                 f"{r['engine_overhead_per_step_mean']:+.1%}" if "engine_overhead_per_step_mean" in r else "–", str(r["engine_fixed_seconds"])]
                for m, r in tr["models"].items()]
        out.append((f"Training, patches per second (batch {tr['batch']}, {tr['patch']} px, {tr.get('repeats', 1)} runs of each side)",
                    f"Goal: engine overhead per step at most {tr['goal_overhead']:.0%}. {tr['note']}.",
                    ["model", "steps per run", "bare PyTorch loop", "our engine", "overhead per step (median)", "(mean)", "fixed s per run"], rows))
    pa = result.get("patchify")
    if pa and "x1" in pa:
        rows = [[stage, f"{k} ({pa[k]['images']})", str(pa[key]["patches"]), str(pa[key]["seconds"]), str(pa[key]["patches_per_second"]),
                 f"{pa[key]['peak_rss_mib']:.0f}"]
                for stage, prefix in (("patchify", ""), ("corrupt", "corrupt_")) for k in ("x1", "x4") for key in [prefix + k]]
        p = pa["params"]
        out.append((f"patchify and corrupt at 1x and 4x the images ({p['size']} px, {p['patch_size']} px patches, stride {p['stride']})",
                    f"Each in a fresh process; peak RSS includes the interpreter and imports ({pa['imports_only']['peak_rss_mib']:.0f} MiB).",
                    ["stage", "images", "patches", "seconds", "patches/s", "peak RSS MiB"], rows))
    noop = result.get("dvc_noop")
    if noop and "seconds" in noop:
        out.append(("dvc repro with nothing to do", f"Goal: under {noop['goal_seconds']} s.", ["seconds", "ran nothing"],
                    [[str(noop["seconds"]), str(noop["ran_nothing"]).lower()]]))
    rep = result.get("repro")
    if rep and "seconds" in rep:
        differing = f" (differing: {', '.join(rep['outputs_differing'])})" if rep["outputs_differing"] else ""
        out.append((f"The whole default pipeline from nothing: {rep['seconds'] / 60:.1f} min",
                    f"Commit {rep['commit'][:12]}; {rep['note']}. Outputs byte-identical to this checkout's dvc.lock: "
                    f"{rep['outputs_identical']} of {rep['outputs_compared']}{differing}.",
                    ["stage kind", "stages", "seconds"],
                    [[k, str(sum(1 for s in rep["stages"] if s.split("@")[0] == k)), str(v)]
                     for k, v in sorted(rep["by_kind"].items(), key=lambda kv: -kv[1])]))
    for key in ("patchify", "dvc_noop", "repro"):
        r = result.get(key)
        if r and ("skipped" in r or "failed" in r):
            out.append((key, str(r.get("skipped") or r.get("failed")), [], []))
    return out


def markdown(result: dict) -> str:
    lines = ["# medrestore benchmark", "", f"Machine: {json.dumps(result['machine'])}. Mode: {result['mode']}.", ""]
    for title, text, header, rows in sections(result):
        lines += [f"## {title}", ""] + ([text, ""] if text else [])
        if header:
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows), ""]
    return "\n".join(lines)


SECTIONS = ("inference", "baselines", "metrics", "training", "patchify", "dvc_noop", "repro")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="medrestore.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the reduced size CI runs")
    ap.add_argument("--out", default="reports")
    ap.add_argument("--assets", default="../shared/assets/pyiqa")
    ap.add_argument("--only", nargs="*", help="sections to run (inference baselines metrics training patchify dvc_noop repro); "
                    "repro, the whole pipeline from nothing, runs in the full mode only unless named here")
    ap.add_argument("--mirror", default="../shared/datasets")
    ap.add_argument("--compile", action="store_true", help="time torch.compile in the inference section also in --quick mode")
    ap.add_argument("--merge", action="store_true", help="replace only the sections run in the existing OUT/bench.json, keep the others")
    args = ap.parse_args(argv)
    quick = args.quick
    sections = set(args.only or ["inference", "baselines", "metrics", "training", "patchify", "dvc_noop", *([] if quick else ["repro"])])
    mode = "quick" if quick else "full"
    result: dict = {"mode": mode, "machine": machine(), "section_modes": {}}
    if "inference" in sections:
        models = ["dncnn", "redae"] if quick else ["dncnn", "redae", "cdae", "irunet", "srresnet", "lapsrn"]
        result["inference"] = bench_inference(models, size=384 if quick else 768, tile=128 if quick else 256, repeats=3 if quick else 5,
                                              compile=args.compile or not quick)
    if "baselines" in sections:
        result["baselines"] = bench_baselines(["median", "nlmeans"] if quick else ["median", "nlmeans", "bm3d"], size=128 if quick else 256, repeats=1 if quick else 3)
    if "metrics" in sections:
        result["metrics"] = bench_metrics(2 if quick else 6, 256 if quick else 512, args.assets)
    if "training" in sections:
        result["training"] = bench_training(["redae"] if quick else ["redae", "dncnn", "irunet", "cdae"], steps=5 if quick else 20,
                                            batch=8 if quick else 16, patch=40, repeats=1 if quick else 3, min_seconds=0 if quick else 3.0)
    if "patchify" in sections:
        result["patchify"] = bench_patchify(Path.cwd(), size=256 if quick else 768, stride=20 if quick else 10, mirror=args.mirror)
    if "dvc_noop" in sections:
        result["dvc_noop"] = bench_dvc_noop(Path.cwd())
    if "repro" in sections:
        result["repro"] = bench_repro(Path.cwd(), Path(args.mirror).parent)
    result["section_modes"] = {k: mode for k in SECTIONS if k in result}
    out = Path(args.out)
    if args.merge and (out / "bench.json").is_file():
        old = json.loads((out / "bench.json").read_text())
        modes = {**{k: old.get("mode", "?") for k in SECTIONS if k in old}, **old.get("section_modes", {}), **result["section_modes"]}
        result = {**old, **result, "section_modes": modes}
        result["mode"] = mode if set(modes.values()) == {mode} else "mixed: " + ", ".join(f"{k} {v}" for k, v in modes.items())
    write_json_atomic(out / "bench.json", result)
    write_text_atomic(out / "bench.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
