"""Training losses, small functions on (N, C, H, W) tensors in [0, 1]."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred, target)


def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error (seed 004's MAE)."""
    return F.l1_loss(pred, target)


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """sqrt((x - y)^2 + eps^2), the robust L1 of LapSRN (seed 001)."""
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


def channel_weighted_mse(weights: Sequence[float]) -> Loss:
    """MSE with per-channel weights normalised to sum 1; seed 000's green-weighted loss is R:G:B = 1:3:2."""
    w = torch.tensor(weights, dtype=torch.float32)
    w = w / w.sum()

    def loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        per_channel = ((pred - target) ** 2).mean(dim=(0, 2, 3))
        return (per_channel * w.to(per_channel)).sum()

    return loss


def make_loss(name: str, **kwargs) -> Loss:
    if name == "mse":
        return mse
    if name == "l1":
        return l1
    if name == "charbonnier":
        return lambda p, t: charbonnier(p, t, **kwargs)
    if name == "weighted_mse":
        return channel_weighted_mse(kwargs["weights"])
    raise ValueError(f"unknown loss {name!r}; known: mse, l1, charbonnier, weighted_mse")
