"""Learning speed of one training run: validation PSNR against optimiser steps and CPU seconds.

Trains a run of params.yaml (``train.runs`` key) with the pipeline's own engine on the pipeline's
own patches (``dvc repro`` the data stages first), with any settings overridden on the command
line, and prints one JSON object: the settings, seconds per step, and the validation curve with the
wall time of every validation. Nothing is written to the DVC outputs or to MLflow.

    .venv/bin/python benchmarks/learning.py denoise-g25-dncnn --set lr=0.001 batch_size=16 \
        max_steps=600 val_every=100 [--out result.json]

Values of --set are YAML (``lr_milestones=[0.5]``, ``model_kwargs={skip: bicubic}``).

``--snapshots DIR --snapshot-steps 1000 4000 ...`` also keeps the network as it is at those validated
steps (``DIR/step-01000``, model folders as the train stage writes them, current weights rather than the
best so far), so that one long run gives a test-image curve (``benchmarks/score_models.py DIR/step-*``).

``--clip-grad-norm NORM`` clips each optimiser step's gradient norm (Lightning's ``gradient_clip_val``; paired
models only, the GANs optimise by hand): a lever measured here, not a setting of the pipeline.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


class _Clock:
    """A stand-in tracker: takes the time of every value the engine logs."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.rows: list[dict] = []

    def log_metrics(self, values: dict, step: int | None = None) -> None:
        if "val_psnr" in values:
            self.rows.append({"step": step, "seconds": round(time.perf_counter() - self.start, 2),
                              **{k: round(v, 4) for k, v in values.items()}})
            print(json.dumps(self.rows[-1]), file=sys.stderr, flush=True)


def _extend_trainer(callbacks: list | None = None, **options) -> None:
    """Give the engine's trainer more callbacks and Lightning options (for this process only: the
    training code itself stays the pipeline's)."""
    from medrestore.training import engine

    make_trainer = engine.make_trainer

    def extended(*args, **kwargs):
        kwargs["callbacks"] = [*kwargs.get("callbacks", []), *(callbacks or [])]
        return make_trainer(*args, **{**kwargs, **options})

    engine.make_trainer = extended


def _clip_gradients(max_norm: float) -> None:
    """Clip the gradient norm of every optimiser step at ``max_norm`` (Lightning's gradient_clip_val)."""
    _extend_trainer(gradient_clip_val=float(max_norm), gradient_clip_algorithm="norm")


def _keep_snapshots(folder: Path, steps: set[int], cfg) -> None:
    """Add a callback to the engine's trainer that saves the network after the validations at ``steps``."""
    import copy

    import pytorch_lightning as L
    import torch

    from medrestore.models import save_model

    class Snapshot(L.Callback):
        def on_validation_end(self, trainer, pl_module) -> None:
            step = int(trainer.global_step)
            if step in steps and not trainer.sanity_checking:
                net = copy.deepcopy(pl_module.net).cpu().eval().to(memory_format=torch.contiguous_format)
                save_model(net, folder / f"step-{step:05d}", name=cfg.model, kwargs=cfg.model_kwargs,
                           extra={"train": {"steps": step,
                                            "val_psnr": round(float(trainer.callback_metrics["val_psnr"]), 4)}})

    _extend_trainer(callbacks=[Snapshot()])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--profile", default=None, help="train.profile to start from (default: params.yaml's)")
    ap.add_argument("--init", default=None, help="a model folder whose weights start the network")
    ap.add_argument("--scratch", action="store_true",
                    help="random start even for a train.finetune run (which starts from its init)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--save", type=Path, help="keep the trained model folder here")
    ap.add_argument("--snapshots", type=Path, help="keep model folders of the network at --snapshot-steps here")
    ap.add_argument("--snapshot-steps", type=int, nargs="*", default=[], metavar="STEP")
    ap.add_argument("--clip-grad-norm", type=float, default=None, metavar="NORM",
                    help="clip each step's gradient norm at NORM (not a pipeline setting: a lever to measure)")
    args = ap.parse_args(argv)
    os.chdir(REPO)
    sys.path.insert(0, str(REPO))  # the benchmarks package (run as a script, only benchmarks/ is on the path)
    import numpy as np
    import torch

    from benchmarks.bench import cpu_model
    from medrestore.core.io import load_params, read_json
    from medrestore.core.params import run_entry, train_settings
    from medrestore.data.patches import load_fov, load_patches
    from medrestore.pipeline.train import train_targets
    from medrestore.training.config import TrainConfig
    from medrestore.training.engine import train_model

    params = load_params()
    train = params["train"]
    if args.profile:
        train["profile"] = args.profile
    entry = run_entry(train, args.run)
    settings = train_settings(train, args.run, params["seed"])
    for item in args.set:
        key, _, value = item.partition("=")
        settings[key] = yaml.safe_load(value)
    settings["progress_bar"] = False
    if args.init:
        settings["init_from"] = str(Path(args.init).resolve())
    if args.scratch:
        settings.pop("init_from", None)
    print(f"[learning] {args.run}: starts from {settings.get('init_from') or 'random weights'}", file=sys.stderr,
          flush=True)
    cfg = TrainConfig.from_params(settings)
    patches, corrupted = REPO / "artifacts/patches", REPO / "artifacts/corrupt" / entry["task"]
    corruption = read_json(corrupted / "corruption.json")
    domain = np.load(corrupted / "train_domain.npy") if corruption.get("unpaired") else None
    clock = _Clock()
    if args.snapshots:
        _keep_snapshots(args.snapshots, set(args.snapshot_steps), cfg)
    if args.clip_grad_norm:
        _clip_gradients(args.clip_grad_norm)
    with tempfile.TemporaryDirectory() as tmp:
        metrics = train_model(
            cfg,
            (train_targets(patches, corrupted), load_patches(corrupted, "train")),
            (load_patches(patches, "val"), load_patches(corrupted, "val")),
            out_dir=args.save or Path(tmp) / "out",
            ckpt_dir=Path(tmp) / "ckpt",
            tracker=clock,
            train_domain=domain,
            run=args.run,
            fov=(load_fov(patches, "train"), load_fov(patches, "val")) if cfg.fov_loss else None,
        )
    total = time.perf_counter() - clock.start
    result = {
        "run": args.run,
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "settings": {k: v for k, v in settings.items() if k not in ("progress_bar",)},
        **({"clip_grad_norm": args.clip_grad_norm} if args.clip_grad_norm else {}),
        "steps": metrics["steps"],
        "seconds": round(total, 1),
        "seconds_per_step": round(total / max(metrics["steps"], 1), 4),
        "best_val_psnr": metrics["best_val_psnr"],
        "curve": clock.rows,
    }
    text = json.dumps(result, indent=1, default=str)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
