"""Pad-to-multiple for networks that downsample: pad bottom/right, run, crop back.

Reflection padding where the image is large enough to reflect (each pad smaller than the side),
edge replication otherwise (tiny inputs), so borders never see zeros.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """``x`` padded on the bottom/right so H and W are multiples of ``multiple``; also the original (H, W)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


def crop_to(y: torch.Tensor, size: tuple[int, int], scale: int = 1) -> torch.Tensor:
    """The top-left ``scale * size`` part of ``y`` (undoes :func:`pad_to_multiple`)."""
    h, w = size
    return y[..., : h * scale, : w * scale]
