"""Training the last network of a :class:`medrestore.models.chain.Chain` (Hayee2017's pipeline).

:func:`chain_pairs` gives the pairs the trained network learns from: a seeded subset of the
patches, whose inputs are the frozen first network's (a trained run's model) outputs, reduced
(:func:`first_stage_inputs`); :func:`assemble_chain` saves first network + fixed steps + trained
network as one model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from medrestore.core.io import InputError, read_json
from medrestore.models import load_model, save_model
from medrestore.models.chain import Chain, Downscale


def subset_indices(n: int, size: int | None, seed: int, split: str) -> np.ndarray:
    """Sorted, seeded choice of ``size`` of ``n`` patch indices (all of them when ``size`` is None or >= n)."""
    if size is None or size >= n:
        return np.arange(n)
    rng = np.random.default_rng([seed, sum(map(ord, split))])
    return np.sort(rng.choice(n, size=int(size), replace=False))


@torch.inference_mode()
def first_stage_inputs(first: torch.nn.Module, degraded: np.ndarray, downscale: int, *, batch: int = 64) -> np.ndarray:
    """uint8 N x P/d x P/d x C: ``first`` applied to each uint8 patch, clamped, reduced by ``downscale``
    (bicubic, antialiased) and quantised to 8 bits, as an image written between two programs."""
    first = first.eval()
    reduce = Downscale(downscale)
    out = []
    for start in range(0, degraded.shape[0], batch):
        x = torch.from_numpy(np.ascontiguousarray(degraded[start : start + batch])).permute(0, 3, 1, 2).float() / 255.0
        y = reduce(first(x).clamp(0, 1))
        out.append(torch.round(y * 255.0).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out, axis=0)


Pairs = tuple[np.ndarray, np.ndarray]  # (clean targets, inputs), uint8 N x H x W x C


def chain_pairs(first_dir: Path, run: str, train_pairs: Pairs, val_pairs: Pairs, downscale: int,
                subset: list[int | None] | None, seed: int) -> tuple[Pairs, Pairs]:
    """(train, val) pairs of chain ``run``: of each split, ``subset`` = [train size, val size] patches
    (all when None), targets unchanged, inputs = the first model's outputs reduced by ``downscale``."""
    check_first(first_dir, run)
    first, _ = load_model(Path(first_dir))
    sizes = subset or [None, None]
    out = []
    for (clean, degraded), split, size in zip((train_pairs, val_pairs), ("train", "val"), sizes):
        idx = subset_indices(clean.shape[0], size, seed, split)
        out.append((np.ascontiguousarray(clean[idx]), first_stage_inputs(first, degraded[idx], downscale)))
    return out[0], out[1]


def assemble_chain(first_dir: Path, trained_dir: Path, downscale: int,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Replace the trained network in ``trained_dir`` by the chain first -> downscale -> trained
    (one ``model.safetensors`` and ``model.json``); returns the chain's ``model.json``."""
    first, first_meta = load_model(Path(first_dir))
    last, last_meta = load_model(Path(trained_dir))
    parts = [
        {"model": first_meta["model"], "kwargs": first_meta.get("kwargs", {})},
        {"step": "downscale", "scale": int(downscale)},
        {"model": last_meta["model"], "kwargs": last_meta.get("kwargs", {})},
    ]
    chain = Chain(parts)
    chain.parts[0].load_state_dict(first.state_dict())
    chain.parts[2].load_state_dict(last.state_dict())
    scale = int(round(chain.scale))
    keep = {k: v for k, v in last_meta.items() if k not in ("model", "kwargs", "parameters", "scale", "task_kind")}
    kind = first_meta.get("task_kind", "denoise") if scale == 1 else last_meta.get("task_kind", "sr")
    save_model(
        chain.eval(), Path(trained_dir), name="chain", kwargs={"parts": parts},
        extra={**keep, "scale": scale, "task_kind": kind, **(extra or {})},
    )
    return read_json(Path(trained_dir) / "model.json")


def check_first(first_dir: Path, run: str) -> None:
    if not (Path(first_dir) / "model.safetensors").is_file():
        raise InputError(f"{first_dir}: no trained model for the first part of chain {run!r}. Fix: `dvc repro` (it "
                         "trains that run first).")


__all__ = ["assemble_chain", "chain_pairs", "check_first", "first_stage_inputs", "subset_indices"]
