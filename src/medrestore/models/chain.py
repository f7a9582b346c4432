"""Hayee2017's two-network pipeline as one model: denoise, shrink, super-resolve.

Hayee2017 (section 4.3 and its training notes): "the LR image set is generated from the output of the
DCNN network" and the SRGAN "regenerate[s] the missing thin veins" from it, scored against the
original high-resolution image. :class:`Chain` runs its parts in order; a part is either a saved
network (``{"model": name, "kwargs": {...}}``) or a fixed step (``{"step": "downscale", "scale": 4}``:
bicubic reduction with antialiasing, as ``medrestore.degradations``' downscale). Saved as one
``model.safetensors`` (each part's weights under ``parts.<i>.``) with the parts in ``model.json``,
so evaluation, ``medrestore restore`` and the reports treat it like any other model.

The train stage builds it (``train.chains`` in params.yaml): the first network is a trained run's
model, frozen; the last one is trained on the first one's (reduced) outputs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Downscale(nn.Module):
    """Bicubic reduction by an integer factor with antialiasing (PIL's ``reduce``-like filter)."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        if int(scale) < 1:
            raise ValueError(f"downscale factor must be at least 1, got {scale}")
        self.scale = int(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.scale or w % self.scale:
            raise ValueError(f"a {h}x{w} input cannot be reduced by {self.scale}: crop or pad it to a multiple of "
                             f"{self.scale}")
        out = nn.functional.interpolate(x, size=(h // self.scale, w // self.scale), mode="bicubic", align_corners=False,
                                        antialias=True)
        return out.clamp(0, 1)


def _build_part(part: dict[str, Any]) -> nn.Module:
    from medrestore.models import build_model

    if "step" in part:
        if part["step"] != "downscale":
            raise ValueError(f"unknown chain step {part['step']!r}; the one fixed step is 'downscale'")
        return Downscale(part["scale"])
    return build_model(part["model"], **(part.get("kwargs") or {}))


class Chain(nn.Module):
    """Parts applied in order; outputs of networks are clamped to [0, 1] before the next part, as
    an image saved between two separate programs would be."""

    def __init__(self, parts: list[dict[str, Any]]) -> None:
        super().__init__()
        if not parts:
            raise ValueError("a chain needs at least one part")
        self.parts = nn.ModuleList(_build_part(p) for p in parts)
        self.scale = 1.0  # output size / input size
        self.multiple = 1  # padding multiple: an input must survive every reduction
        for p in self.parts:
            if isinstance(p, Downscale):
                self.scale /= p.scale
                self.multiple *= p.scale
            else:
                self.scale *= getattr(p, "scale", 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from medrestore.models.padding import crop_to, pad_to_multiple

        size = x.shape[-2:]
        x, _ = pad_to_multiple(x, self.multiple)
        for i, part in enumerate(self.parts):
            x = part(x)
            if i < len(self.parts) - 1 and not isinstance(part, Downscale):
                x = x.clamp(0, 1)
        return crop_to(x, size, scale=max(int(round(self.scale)), 1))
