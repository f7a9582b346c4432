"""The optimiser and learning-rate schedule a training run names.

:class:`TrainConfig`, what one run is, is defined once with params.yaml's schema
(:mod:`medrestore.core.params`) and re-exported here."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from medrestore.core.params import TrainConfig

SCHEDULES = ("cosine", "inverse_time", "constant", "linear_decay", "step")
OPTIMIZERS = ("adam", "sgd")

__all__ = ["OPTIMIZERS", "SCHEDULES", "TrainConfig", "cosine_factor", "lr_factor", "make_optimizer", "make_scheduler"]


def make_optimizer(params: Iterable[torch.nn.Parameter], cfg: TrainConfig,
                   lr: float | None = None) -> torch.optim.Optimizer:
    lr = cfg.lr if lr is None else lr
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}: {', '.join(OPTIMIZERS)}")


def lr_factor(cfg: TrainConfig) -> Callable[[int], float]:
    """The multiplier of ``cfg.lr`` at each step (a ``LambdaLR`` function): the schedule's, times a
    linear warm-up over the first ``cfg.warmup_steps`` steps when that is set."""
    base = _schedule_factor(cfg)
    warm = int(cfg.warmup_steps)
    if warm <= 0:
        return base
    return lambda s: base(s) * min(1.0, (s + 1) / warm)


def cosine_factor(floor: float, n: int) -> Callable[[int], float]:
    """Half a cosine from 1 at step 0 down to ``floor`` at step ``n`` (``floor`` after it): the
    multiplier of the base rate, for ``LambdaLR``. Shared by the restoration runs (``schedule:
    cosine``) and the vessel segmenter (:mod:`medrestore.training.segmenter`)."""
    return lambda s: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(s, n) / n))


def _schedule_factor(cfg: TrainConfig) -> Callable[[int], float]:
    n = max(cfg.max_steps, 1)
    if cfg.schedule == "cosine":
        return cosine_factor(min(cfg.lr_min / cfg.lr, 1.0), n)
    if cfg.schedule == "inverse_time":
        return lambda s: 1.0 / (1.0 + cfg.lr_decay * s)
    if cfg.schedule == "constant":
        return lambda s: 1.0
    if cfg.schedule == "linear_decay":  # CycleGAN: constant for the first half, then linearly to 0
        half = n // 2
        return lambda s: 1.0 if s < half else max(0.0, 1.0 - (s - half) / max(n - half, 1))
    if cfg.schedule == "step":  # Ledig / Lai: multiply by lr_gamma at each milestone
        marks = sorted(int(round(m * n)) for m in cfg.lr_milestones)
        return lambda s: cfg.lr_gamma ** sum(s >= m for m in marks)
    raise ValueError(f"unknown schedule {cfg.schedule!r}: {', '.join(SCHEDULES)}")


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(cfg))
