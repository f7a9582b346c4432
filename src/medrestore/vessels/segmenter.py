"""The learned vessel segmenter as a model: a small U-Net (:class:`~medrestore.models.unet.UNet`)
saved and loaded like the restoration models (:func:`medrestore.models.save_model`), applied tile
by tile (:func:`segment`); and :class:`VesselSegmenter`, the segmenter the pipeline uses (the U-Net
with its binarisation rule, or Frangi when there is no trained U-Net).

Training: :func:`medrestore.training.segmenter.train_segmenter`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medrestore.core.io import InputError
from medrestore.models import save_model
from medrestore.models.unet import UNet
from medrestore.vessels.frangi import (
    FRANGI_NAME,
    TOP_FRACTION,
    _as_float,
    _fov_or_all,
    binarize,
    green_channel,
    segment_frangi,
)

#: The ``model`` name in a segmenter's ``model.json``.
SEGMENTER_NAME = "unet"
#: U-Net probability threshold.
UNET_THRESHOLD = 0.5


# ============================================================================= the U-Net segmenter
def _input_array(image: np.ndarray, in_channels: int) -> np.ndarray:
    """float32 C x H x W in [0, 1] for the network: RGB, or the green channel for 1 channel."""
    img = _as_float(image).astype(np.float32)
    if in_channels == 1:
        return green_channel(img).astype(np.float32)[None]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != in_channels:
        raise ValueError(f"the segmenter takes {in_channels} channels; got an image of shape {img.shape}")
    return np.ascontiguousarray(img.transpose(2, 0, 1))


def save_segmenter(model: UNet, out_dir: str | Path, *, kwargs: dict, extra: dict | None = None) -> None:
    """``model.safetensors`` (weights, no pickle) and ``model.json`` (how to rebuild it), each atomic,
    written by :func:`medrestore.models.save_model` (files readable by all); ``model.json`` also
    says ``"task": "vessel-segmentation"``."""
    save_model(model, Path(out_dir), name=SEGMENTER_NAME, kwargs=kwargs,
               extra={"task": "vessel-segmentation", **(extra or {})})


def load_segmenter(path: str | Path) -> tuple[UNet, dict]:
    """Load a folder (or its ``model.safetensors``) written by :func:`save_segmenter` (as
    :func:`medrestore.training.segmenter.train_segmenter` does)."""
    from safetensors.torch import load_file

    path = Path(path)
    folder = path.parent if path.suffix == ".safetensors" else path
    meta_path, weights = folder / "model.json", folder / "model.safetensors"
    if not meta_path.is_file() or not weights.is_file():
        raise InputError(f"{folder}: needs model.json and model.safetensors. Fix: pass a folder written by "
                         "train_segmenter.")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{meta_path}: not valid JSON ({exc}). Fix: retrain the segmenter.") from exc
    if meta.get("model") != SEGMENTER_NAME:
        raise InputError(f"{meta_path}: holds model {meta.get('model')!r}, not a vessel segmenter. Fix: pass the "
                         "folder written by train_segmenter.")
    model = UNet(**meta.get("kwargs", {}))
    try:
        model.load_state_dict(load_file(str(weights)))
    except Exception as exc:  # safetensors and load_state_dict raise their own error types
        raise InputError(
            f"{weights}: cannot load the segmenter's weights ({exc}). Fix: retrain the segmenter."
        ) from exc
    return model.eval(), meta


@torch.inference_mode()
def segment(
    model: UNet,
    image: np.ndarray,
    fov: np.ndarray | None = None,
    *,
    tile: int = 512,
    overlap: int = 64,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Vessel probability map (float32 H x W in [0, 1], 0 outside the FOV) of a U-Net segmenter.

    Large images are cut into ``tile`` px tiles, each run with ``overlap`` px of real context on
    every side and only its centre kept. Tile corners and overlaps are rounded up to multiples of
    ``2 ** depth`` so every tile sees the pooling grid of the whole image: with an overlap that
    covers the receptive field, the tiled map equals the untiled one to float precision.
    """
    model = model.to(device).eval()
    x = torch.from_numpy(_input_array(image, model.in_channels))
    _, h, w = x.shape
    fov = _fov_or_all(fov, (h, w))
    m = model.multiple
    step = max(-(-tile // m) * m, m)
    ov = -(-max(overlap, 0) // m) * m
    out = np.zeros((h, w), dtype=np.float32)
    for top in range(0, h, step):
        for left in range(0, w, step):
            bottom, right = min(top + step, h), min(left + step, w)
            t0, l0 = max(top - ov, 0), max(left - ov, 0)
            b0, r0 = min(bottom + ov, h), min(right + ov, w)
            logits = model(x[:, t0:b0, l0:r0][None].to(device))[0, 0]
            prob = torch.sigmoid(logits.float()).cpu().numpy()
            out[top:bottom, left:right] = prob[top - t0 : bottom - t0, left - l0 : right - l0]
    out[~fov] = 0.0
    return out


def segment_unet(model: UNet, image: np.ndarray, fov: np.ndarray | None = None, *, threshold: float = UNET_THRESHOLD,
                 **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    """(probability map, binary map at ``threshold``) of the U-Net segmenter, inside the FOV."""
    prob = segment(model, image, fov, **kwargs)
    return prob, (prob > threshold) & _fov_or_all(fov, prob.shape)


# ============================================================================= the segmenter the pipeline uses
class VesselSegmenter:
    """The pipeline's vessel segmenter: ``segmenter(image, fov) -> (score map, binary map)``.

    A trained U-Net (``model``) with its binarisation rule (``rule`` ``"threshold"``: probability
    above ``value``; ``"top_fraction"``: the ``value`` highest in-FOV probabilities, as
    :func:`binarize`), or, with ``model=None``, the Frangi segmenter (:func:`segment_frangi`).
    """

    def __init__(self, model: UNet | None = None, *, rule: str = "threshold", value: float = UNET_THRESHOLD,
                 tile: int = 512, overlap: int = 64, device: str | torch.device = "cpu") -> None:
        if rule not in ("threshold", "top_fraction"):
            raise ValueError(f"binarisation rule must be 'threshold' or 'top_fraction', not {rule!r}")
        self.model, self.rule, self.value = model, rule, float(value)
        self.tile, self.overlap, self.device = tile, overlap, device

    @property
    def name(self) -> str:
        return SEGMENTER_NAME if self.model is not None else FRANGI_NAME

    def describe(self) -> dict[str, Any]:
        if self.model is None:
            return {"segmenter": FRANGI_NAME, "rule": "top_fraction", "value": TOP_FRACTION}
        return {"segmenter": SEGMENTER_NAME, "rule": self.rule, "value": self.value}

    def __call__(self, image: np.ndarray, fov: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if self.model is None:
            return segment_frangi(image, fov)
        prob = segment(self.model, image, fov, tile=self.tile, overlap=self.overlap, device=self.device)
        if self.rule == "top_fraction":
            return prob, binarize(prob, fov, top_fraction=self.value)
        return prob, (prob > self.value) & _fov_or_all(fov, prob.shape)


def load_vessel_segmenter(folder: str | Path | None, **kwargs: Any) -> tuple[VesselSegmenter, dict]:
    """The segmenter a ``train_segmenter`` stage wrote to ``folder`` (and its ``model.json``).

    Frangi stands in when ``folder`` is None or missing, or when its ``model.json`` says
    ``"model": "frangi"`` (no dataset with manual masks to train on).
    """
    if folder is None or not (Path(folder) / "model.json").is_file():
        return VesselSegmenter(None), {"model": FRANGI_NAME, "train_ids": []}
    meta_path = Path(folder) / "model.json"
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{meta_path}: not valid JSON ({exc}). Fix: rerun the train_segmenter stage.") from exc
    if meta.get("model") == FRANGI_NAME:
        return VesselSegmenter(None), meta
    model, meta = load_segmenter(folder)
    rule = meta.get("binarize", {"rule": "threshold", "value": UNET_THRESHOLD})
    return VesselSegmenter(model, rule=rule["rule"], value=rule["value"], **kwargs), meta
