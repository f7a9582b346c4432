"""bf16 on the CPU for the standard profile's costliest trainings: ``32-true`` against ``bf16-mixed``.

Training: each run of params.yaml's ``train.runs`` named on the command line trains with its
standard-profile settings (model, batch, optimiser, schedule, ``val_patches``) on the pipeline's own
patches, cut to ``--steps`` steps (the schedule spans those steps), once per precision, the two
alternating (32, bf16, 32, bf16, ...) ``--repeats`` times for each of ``--seeds``. Per precision: the
median optimiser step (the first 3 of each run dropped) and, per seed, the validation PSNR after the
last step (the same every repeat on one machine). A second seed gives the seed-to-seed spread that a
precision's difference is to be read against.

Inference: the pipeline's trained networks restore one test image as the evaluation does
(``restore_array``, tile 512, overlap 32) in float32 and under bf16 autocast, alternating, after a
warm-up; the median seconds, and how far the 8-bit outputs are apart.

    python -m benchmarks.bf16_cpu --artifacts ARTIFACTS [--steps 200] [--repeats 2] [--out FILE.json]

``ARTIFACTS`` holds the pipeline's ``patches/``, ``corrupt/`` and ``models/`` (read only).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from benchmarks.bench import _interleaved, _StepClock, machine
from medrestore.core.io import read_image, write_json_atomic
from medrestore.core.params import run_entry, train_settings
from medrestore.data.patches import load_patches
from medrestore.degradations import to_float, to_uint8
from medrestore.models import load_model
from medrestore.pipeline.train import train_targets
from medrestore.serving.inference import restore_array
from medrestore.training.config import TrainConfig
from medrestore.training.engine import train_model

PRECISIONS = ("32-true", "bf16-mixed")


def bench_training(params: dict, key: str, artifacts: Path, steps: int, repeats: int,
                   seeds: list[int] | None = None) -> dict:
    entry = run_entry(params["train"], key)
    settings = train_settings(params["train"], key, params["seed"], models_root=artifacts / "models")
    settings.update(max_steps=steps, val_every=steps, ckpt_every=steps, progress_bar=False)
    corrupted = artifacts / "corrupt" / entry["task"]
    train = (train_targets(artifacts / "patches", corrupted), load_patches(corrupted, "train"))
    val = (load_patches(artifacts / "patches", "val"), load_patches(corrupted, "val"))
    step_s: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    wall: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    psnr: dict[str, dict[int, list[float]]] = {p: {} for p in PRECISIONS}
    for seed, _ in [(s, r) for s in seeds or [params["seed"]] for r in range(repeats)]:
        for precision in PRECISIONS:
            cfg = TrainConfig.from_params({**settings, "precision": precision, "seed": seed})
            with tempfile.TemporaryDirectory() as tmp, _StepClock() as clock:
                t = time.perf_counter()
                m = train_model(cfg, train, val, Path(tmp) / "out", Path(tmp) / "ckpt")
                wall[precision].append(round(time.perf_counter() - t, 2))
            step_s[precision] += clock.steps()[3:]
            psnr[precision].setdefault(seed, []).append(m["final_val_psnr"])
    ms = {p: round(float(np.median(v)) * 1e3, 1) for p, v in step_s.items()}
    return {"model": settings["model"], "batch_size": settings["batch_size"], "steps": steps,
            "val_patches": settings.get("val_patches"), "step_ms_median": ms,
            "speedup": round(ms["32-true"] / ms["bf16-mixed"], 3), "run_seconds": wall, "val_psnr": psnr}


def bench_inference(model_dir: Path, image: np.ndarray, clean: np.ndarray, repeats: int) -> dict:
    model = load_model(model_dir)[0]
    x = to_float(image)
    fns = {p: (lambda p=p: restore_array(model, x, tile=512, overlap=32, scale=1, precision=p))
           for p in ("float32", "bf16")}
    t = _interleaved(fns, repeats)
    out = {p: to_uint8(fn()) for p, fn in fns.items()}
    diff = np.abs(out["float32"].astype(np.int16) - out["bf16"].astype(np.int16))

    def psnr(a: np.ndarray) -> float:
        return round(float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - clean) ** 2))), 3)

    return {"seconds": {p: round(v, 3) for p, v in t.items()}, "speedup": round(t["float32"] / t["bf16"], 3),
            "max_abs_diff_8bit": int(diff.max()), "pixels_differing": round(float((diff > 0).mean()), 4),
            "psnr_vs_clean_db": {p: psnr(o) for p, o in out.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, required=True)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--runs", nargs="+", default=["denoise-blind-dncnn-blind", "denoise-g25-cdae", "denoise-g25-redae"])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2, help="runs per precision and seed")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default: params.yaml's)")
    ap.add_argument("--infer", nargs="*", default=["denoise-blind/dncnn-blind", "denoise-g25/dncnn",
                                                   "denoise-g25/cdae", "denoise-g25/redae"])
    ap.add_argument("--image", default="chase_db1__Image_11L.png", help="a denoise-g25 s25 test image")
    ap.add_argument("--infer-repeats", type=int, default=3)
    ap.add_argument("--skip-training", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    params = yaml.safe_load(args.params.read_text())
    result: dict = {"machine": machine(), "training": {}, "inference": {}}
    a = args.artifacts
    image = read_image(a / "corrupt" / "denoise-g25" / "test" / "s25" / args.image, "RGB")
    clean = read_image(a / "patches" / "test" / "images" / args.image, "RGB").astype(np.float64)
    for name in args.infer:
        result["inference"][name] = bench_inference(a / "models" / name, image, clean, args.infer_repeats)
        print(name, json.dumps(result["inference"][name]), flush=True)
    for key in [] if args.skip_training else args.runs:
        result["training"][key] = bench_training(params, key, a, args.steps, args.repeats, args.seeds)
        print(key, json.dumps(result["training"][key]), flush=True)
    if args.out:
        write_json_atomic(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
