"""The registry of restoration methods: every network and classical baseline, by name.

A model module registers what it defines, beside its definition (:func:`register_model`,
:func:`baseline`); :mod:`medrestore.models` imports every module of its folder, so a new network is
one file there. ``MODELS`` and ``BASELINES`` stay the one place where every name is found.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TRAINERS = ("paired", "srgan", "cyclegan")
TASKS = ("denoise", "sr", "enhance")


@dataclass(frozen=True)
class ModelSpec:
    cls: type
    task: str
    paper: str
    trainer: str = "paired"
    discriminator: type | None = None
    options: dict[str, Any] = field(default_factory=dict)


#: Trainable networks by name (several names may share a network class: their training differs).
MODELS: dict[str, ModelSpec] = {}
#: Classical methods by name: ``f(degraded, sigma, **kw) -> restored`` carrying ``task`` and ``paper``.
BASELINES: dict[str, Callable[..., Any]] = {}


def _free(name: str) -> None:
    if name in MODELS or name in BASELINES or name == "chain":
        raise ValueError(f"the model name {name!r} is registered already. Fix: give the new method another name.")


def register_model(name: str, cls: type, task: str, paper: str, trainer: str = "paired",
                   discriminator: type | None = None, options: dict[str, Any] | None = None) -> ModelSpec:
    """Register the network ``cls`` under ``name``: the task family it is for, the paper it follows,
    how it trains (one of :data:`TRAINERS`; GANs name their ``discriminator``) and trainer ``options``."""
    _free(name)
    if trainer not in TRAINERS:
        raise ValueError(f"model {name!r}: trainer {trainer!r}. Fix: one of {', '.join(TRAINERS)}.")
    if task not in TASKS:
        raise ValueError(f"model {name!r}: task {task!r}. Fix: one of {', '.join(TASKS)}.")
    if trainer != "paired" and discriminator is None:
        raise ValueError(f"model {name!r}: the {trainer} trainer needs a discriminator class.")
    spec = ModelSpec(cls, task, paper, trainer, discriminator, dict(options or {}))
    MODELS[name] = spec
    return spec


def baseline(name: str, task: str, paper: str) -> Callable:
    """Register the decorated function as the classical baseline ``name`` for ``task``, citing ``paper``."""

    def mark(fn: Callable) -> Callable:
        _free(name)
        fn.task, fn.paper = task, paper
        BASELINES[name] = fn
        return fn

    return mark
