"""Tiled restoration of images of any size with a fully convolutional network.

The image is cut into tiles of ``tile`` pixels; each tile is run with ``overlap`` pixels of real
context on every side, and only its centre is kept. With ``overlap`` at least half the network's
receptive field (DnCNN-17: 17 px) the result equals untiled inference, while memory stays that of
one tile.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


@torch.inference_mode()
def restore_array(model: nn.Module, image: np.ndarray, *, tile: int = 256, overlap: int = 32, device: str | torch.device = "cpu") -> np.ndarray:
    """Restore a float32 H x W x C image in [0, 1]; returns float32 in [0, 1]."""
    model = model.to(device).eval()
    h, w, c = image.shape
    out = np.empty_like(image, dtype=np.float32)
    src = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
    step = max(tile, 1)
    for top in range(0, h, step):
        for left in range(0, w, step):
            bottom, right = min(top + step, h), min(left + step, w)
            t0, l0 = max(top - overlap, 0), max(left - overlap, 0)
            b0, r0 = min(bottom + overlap, h), min(right + overlap, w)
            patch = src[:, t0:b0, l0:r0][None].to(device)
            pred = model(patch)[0].float().clamp_(0, 1).cpu().numpy()
            out[top:bottom, left:right] = pred[:, top - t0 : top - t0 + bottom - top, left - l0 : left - l0 + right - left].transpose(1, 2, 0)
    return out
