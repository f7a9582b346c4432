"""Inference-time optimisations, each kept only where ``make bench`` (``benchmarks/bench.py``)
shows it pays (see ``reports/bench.json``):

- batch-norm folding: a BatchNorm2d that follows a Conv2d in an ``nn.Sequential`` is folded into
  the convolution's weights and bias (exact up to float rounding), removing one pass over every
  feature map;
- channels-last memory format on CPU (oneDNN's preferred layout for convolutions).
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``model`` (eval mode) with every Conv2d -> BatchNorm2d pair of a Sequential fused.
    Returns (model, number of pairs folded)."""
    model = copy.deepcopy(model).eval()
    folded = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in itertools.pairwise(names):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = nn.Identity()
                folded += 1
    return model, folded


def prepare_for_inference(model: nn.Module, *, fold_bn: bool = True, channels_last: bool = True) -> nn.Module:
    """The model as ``medrestore.serving.inference`` runs it: eval mode, BN folded, channels-last."""
    model = model.eval()
    if fold_bn:
        model, _ = fold_batchnorm(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
