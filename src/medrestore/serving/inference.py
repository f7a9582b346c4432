"""Tiled restoration of images of any size with a fully convolutional network.

The image is cut into tiles of ``tile`` pixels; each tile is run with ``overlap`` pixels of real
context on every side, and only its centre is kept. With ``overlap`` at least half the network's
receptive field (DnCNN-17: 17 px) the result equals untiled inference, while memory stays that of
one tile.

Super-resolution networks return ``scale`` times more pixels than they are given: tiles and
overlaps are cut in input pixels and pasted at ``scale`` times their position and size, so the
output is ``scale * H x scale * W``. The scale is read from the model's ``model.json`` (top-level
``scale`` or ``kwargs.scale``) when the caller has it (:func:`model_scale`), else measured with one
forward pass on a small corner of the image.

Out of memory: when a tile raises ``torch.OutOfMemoryError`` (or a ``RuntimeError`` whose message
says "out of memory"), the whole image is restarted with half the tile size, down to ``min_tile``;
below that the error is raised with a hint.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

#: Smallest tile the out-of-memory fallback goes down to (input pixels).
MIN_TILE = 32


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA/CPU allocation failures (``torch.OutOfMemoryError`` or its message)."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def model_scale(model: nn.Module, meta: dict | None = None, *, channels: int = 3, probe: int = 32,
                device: str | torch.device = "cpu") -> int:
    """Output/input size ratio of ``model``: ``meta['scale']`` or ``meta['kwargs']['scale']`` when
    ``meta`` (the model's ``model.json``) gives one, else one forward pass on a ``probe`` px input."""
    for holder in (meta or {}, (meta or {}).get("kwargs", {}) or {}):
        if holder.get("scale") is not None:
            return int(holder["scale"])
    x = torch.zeros(1, channels, probe, probe, device=device)
    with torch.inference_mode():
        out = model.to(device).eval()(x)
    if out.shape[-1] % probe or out.shape[-2] % probe:
        raise ValueError(f"model output {tuple(out.shape[-2:])} is not an integer multiple of its {probe} px input")
    return int(out.shape[-1] // probe)


#: ``restore_array(precision=...)``: float32 (default; the evaluation's) or bf16 autocast.
PRECISIONS = ("float32", "bf16")


@torch.inference_mode()
def _restore_tiled(model: nn.Module, src: torch.Tensor, tile: int, overlap: int, scale: int, device,
                   precision: str = "float32") -> np.ndarray:
    c, h, w = src.shape
    device_type = torch.device(device).type
    out = np.empty((h * scale, w * scale, c), dtype=np.float32)
    step = max(tile, 1)
    for top in range(0, h, step):
        for left in range(0, w, step):
            bottom, right = min(top + step, h), min(left + step, w)
            t0, l0 = max(top - overlap, 0), max(left - overlap, 0)
            b0, r0 = min(bottom + overlap, h), min(right + overlap, w)
            patch = src[:, t0:b0, l0:r0][None].to(device).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                pred = model(patch)[0].float().clamp_(0, 1).cpu().numpy()
            expected = ((b0 - t0) * scale, (r0 - l0) * scale)
            if pred.shape[1:] != expected:
                raise ValueError(
                    f"the model returned {pred.shape[1:]} for a {(b0 - t0, r0 - l0)} tile; expected {expected} at "
                    f"scale {scale}. Fix: pass the model's scale (model.json 'scale' or kwargs.scale)."
                )
            s = scale
            out[top * s : bottom * s, left * s : right * s] = pred[
                :, (top - t0) * s : (bottom - t0) * s, (left - l0) * s : (right - l0) * s
            ].transpose(1, 2, 0)
    return out


def restore_array(
    model: nn.Module,
    image: np.ndarray,
    *,
    tile: int = 256,
    overlap: int = 32,
    device: str | torch.device = "cpu",
    scale: int | None = None,
    min_tile: int = MIN_TILE,
    optimise: bool = True,
    precision: str = "float32",
) -> np.ndarray:
    """Restore a float32 H x W x C image in [0, 1]; returns float32 in [0, 1] of
    ``scale * H x scale * W x C`` (``scale=None``: :func:`model_scale` by a probe forward pass).

    ``tile`` and ``overlap`` are in input pixels. On out-of-memory the tile is halved (see the
    module docstring); a warning names the tile size that worked. ``optimise``: batch-norm folded
    into the convolutions and channels-last layout (:mod:`medrestore.serving.bn_folding`; measured by ``make bench``).
    ``precision``: ``float32``, or ``bf16`` (``torch.autocast`` to bfloat16: 1.7-2.9x faster on a CPU
    with bf16 matrix units, output within 56-61 dB of float32's, measured by ``make bench``; slower
    where the CPU lacks them: check with ``python -m benchmarks.bench --only precision``).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    model = model.to(device).eval()
    if optimise:
        from medrestore.serving.bn_folding import prepare_for_inference

        model = prepare_for_inference(model)
    h, w, c = image.shape
    if scale is None:
        scale = model_scale(model, channels=c, probe=max(8, min(32, h, w)), device=device)
    src = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
    size = max(int(tile), 1)
    while True:
        try:
            out = _restore_tiled(model, src, size, overlap, int(scale), device, precision)
        except (RuntimeError, MemoryError) as exc:
            if not (is_out_of_memory(exc) or isinstance(exc, MemoryError)):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if size <= min_tile:
                raise RuntimeError(
                    f"out of memory restoring a {h}x{w} image even with {size} px tiles. "
                    "Fix: free accelerator memory, use device cpu, or lower evaluate.tile."
                ) from exc
            size = max(size // 2, min_tile)
            continue
        if size != tile:
            warnings.warn(f"out of memory with {tile} px tiles; restored with {size} px tiles", RuntimeWarning,
                          stacklevel=2)
        return out
