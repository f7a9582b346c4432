"""What a restoration method costs: parameters, FLOPs per megapixel, seconds per megapixel.

- ``parameters``: trainable parameters.
- ``flops_per_mpix``: floating-point operations of one forward pass, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts 2; convolutions, matrix
  products and the other ops it knows: element-wise activations and normalisations are not
  counted) on a fixed ``probe`` x ``probe`` input, divided by the megapixels of the *output*
  (``probe * scale`` squared), so a super-resolution network is charged per restored pixel, like
  a denoiser. Deterministic: the same for every machine.
- ``s_per_mpix``: wall-clock seconds to restore one image, divided by its output megapixels; the
  median of ``repeats`` timed runs after ``warmup`` untimed ones. Depends on the machine and its
  load: never part of an output that must be byte-identical on rerun.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from medrestore.models import count_parameters

PROBE = 256


def flops_per_mpix(model: nn.Module, *, channels: int = 3, probe: int = PROBE, scale: int = 1) -> float:
    """FLOPs of one forward pass per output megapixel (see the module docstring)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = model.cpu().eval()
    x = torch.zeros(1, channels, probe, probe)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x)
    return float(counter.get_total_flops()) / ((probe * scale) ** 2 / 1e6)


def seconds_per_mpix(fn: Callable[[], Any], output_pixels: int, *, repeats: int = 3, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs (after ``warmup``), per output megapixel."""
    if repeats < 1 or output_pixels < 1:
        raise ValueError(f"need repeats >= 1 and output_pixels >= 1, got {repeats}, {output_pixels}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(statistics.median(times)) / (output_pixels / 1e6)


def model_cost(model: nn.Module, *, channels: int = 3, scale: int = 1, probe: int = PROBE) -> dict[str, float]:
    """The machine-independent part of a model's cost: parameters and FLOPs per megapixel."""
    return {"parameters": count_parameters(model),
            "flops_per_mpix": flops_per_mpix(model, channels=channels, probe=probe, scale=scale)}


__all__ = ["PROBE", "count_parameters", "flops_per_mpix", "model_cost", "seconds_per_mpix"]
