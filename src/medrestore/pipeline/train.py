"""train RUN: train one (task, model) pair of params.yaml's train.runs, fine-tune one of train.finetune
(the network starts from the weights of the trained model named by ``init``), train one of train.vessel
(a run of train.runs again with a vessel term from the train_segmenter stage's U-Net in its loss), or train one of
train.chains
(Hayee2017's pipeline: a trained run's model, frozen, then a bicubic reduction, then the trained
network; saved as one model in artifacts/models/TASK/METHOD). The settings:
:func:`medrestore.core.params.train_settings`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from medrestore.core.io import InputError, atomic_dir, read_json
from medrestore.core.params import run_entry, train_settings, with_runtime
from medrestore.data.patches import load_fov, load_patches
from medrestore.pipeline.paths import (
    MODELS,
    PATCHES,
    SEGMENTER,
    TRAIN_CACHE,
    corrupt_dir,
    model_dir,
)
from medrestore.pipeline.stage import arg, params, run
from medrestore.serving.mlflow_model import log_restoration_model
from medrestore.tracking.runs import file_md5, log_datasets, tag_outputs
from medrestore.training.chain import assemble_chain, chain_pairs
from medrestore.training.config import TrainConfig
from medrestore.training.engine import train_model


def main(argv: list[str] | None = None) -> None:
    key = arg(argv, 0, "RUN")
    all_p = params()
    entry = run_entry(all_p["train"], key)
    cfg_params = train_settings(all_p["train"], key, all_p["seed"], models_root=MODELS)
    cfg = TrainConfig.from_params(with_runtime(cfg_params, all_p.get("runtime")))
    # the train_segmenter stage's U-Net (a DVC dependency)
    if str(cfg.perceptual.get("backbone", "")).startswith("vessel"):
        cfg = cfg.replace(perceptual={"path": str(SEGMENTER), **cfg.perceptual})
    corrupted = corrupt_dir(entry["task"])
    corruption = read_json(corrupted / "corruption.json")
    domain = np.load(corrupted / "train_domain.npy") if corruption.get("unpaired") else None
    out = model_dir(entry["task"], entry.get("method") or entry["model"])
    train_pairs = (train_targets(PATCHES, corrupted), load_patches(corrupted, "train"))
    val_pairs = (load_patches(PATCHES, "val"), load_patches(corrupted, "val"))
    first_dir = None
    fov = (load_fov(PATCHES, "train"), load_fov(PATCHES, "val")) if cfg.fov_loss else None
    if "first" in entry:  # a chain: the trained network learns from the first model's reduced outputs
        first_dir = model_dir(entry["task"], entry["first"])
        train_pairs, val_pairs = chain_pairs(first_dir, key, train_pairs, val_pairs, int(entry["downscale"]),
                                             entry.get("subset"), all_p["seed"])
        # its samples are a seeded subset of the first model's outputs: the loss covers whole patches
        cfg, fov = cfg.replace(fov_loss=False), None
    data = {
        "train_pairs": train_pairs,
        "val_pairs": val_pairs,
        "ckpt_dir": TRAIN_CACHE / key,
        "extra_meta": {"task": entry["task"]},
        "train_domain": domain,
        "run": f"train@{key}",
        "fov": fov,
        "train_index": crop_index(cfg, corruption, corrupted, key) if first_dir is None else None,
    }
    if not is_rank_zero():
        # DDP: Lightning's launcher and torchrun run the stage once per process. Only rank 0 opens
        # the MLflow run and swaps the outputs into place; the others train into a throwaway folder.
        with tempfile.TemporaryDirectory() as scratch:
            train_model(cfg, out_dir=Path(scratch), tracker=None, **data)
        return
    with run(f"train@{key}",
             {"task": entry["task"], "profile": all_p["train"].get("profile", "standard"), **cfg_params},
             all_p) as tracker:
        log_datasets(tracker, [PATCHES, corrupted], "train")
        with atomic_dir(out) as tmp:
            train_model(cfg, out_dir=tmp, tracker=tracker, **data)
            if first_dir is not None:
                assemble_chain(first_dir, tmp, int(entry["downscale"]), extra={"first": str(first_dir)})
        tag_outputs(tracker, [out])
        # the model as an MLflow pyfunc of this run (input example: a degraded validation patch of the task)
        uri = tracker.call("log_model", log_restoration_model, out, np.asarray(load_patches(corrupted, "val")[0]))
        if uri is not None:
            tracker.set_tags({"model_uri": uri, "model_md5": file_md5(out / "model.safetensors")})


def train_targets(patches_dir: Path, corrupted: Path) -> np.ndarray:
    """The clean training targets: the corrupt stage's photometrically augmented patches
    (``train_clean.npy``, row i the clean form of its ``train.npy`` row i) when it wrote them, else
    the patchify stage's ``train.npy``."""
    if (Path(corrupted) / "train_clean.npy").is_file():
        return load_patches(corrupted, "train_clean")
    return load_patches(patches_dir, "train")


def crop_index(cfg: TrainConfig, corruption: dict, corrupted: Path, key: str) -> tuple[np.ndarray, int] | None:
    """(patchify's ``train_index.npy``, the patch stride) for a run with ``crop_patches`` > 1, else None.
    Crops of adjacent patches are exact only where the patches were cut from one degraded image
    (``level: image``) and the clean targets are the patchify stage's own."""
    if cfg.crop_patches <= 1:
        return None
    if corruption.get("level") != "image" or (Path(corrupted) / "train_clean.npy").is_file():
        raise InputError(
            f"train.runs.{key}: crop_patches assembles crops from adjacent patches, exact only for image-level "
            f"tasks without photometric augmentation; {corrupted} is not one. Fix: set crop_patches: 0 for this run."
        )
    meta = read_json(PATCHES / "patches.json")
    return np.load(PATCHES / "train_index.npy"), int(meta["stride"])


def is_rank_zero() -> bool:
    """False in the extra processes of a DDP run (RANK, LOCAL_RANK or NODE_RANK set and not 0)."""
    return all(os.environ.get(v, "0") == "0" for v in ("RANK", "LOCAL_RANK", "NODE_RANK"))
