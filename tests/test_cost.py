"""Model cost: parameters, FLOPs per output megapixel, seconds per megapixel."""

import time

import pytest
import torch

from medrestore.evaluation.cost import (
    count_parameters,
    flops_per_mpix,
    model_cost,
    seconds_per_mpix,
)
from medrestore.models import build_model


def test_flops_of_a_convolution_match_the_formula():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    # 2 FLOPs per multiply-add, 3 * 8 * 9 multiply-adds per output pixel.
    assert flops_per_mpix(conv, probe=64) == pytest.approx(2 * 3 * 8 * 9 * 1e6)
    assert count_parameters(conv) == 3 * 8 * 9 + 8


def test_super_resolution_flops_are_per_output_pixel():
    torch.manual_seed(0)
    x2, x4 = build_model("srresnet", scale=2, n_blocks=2,
                         features=16), build_model("srresnet", scale=4, n_blocks=2, features=16)
    c2, c4 = model_cost(x2, scale=2, probe=32), model_cost(x4, scale=4, probe=32)
    assert c4["parameters"] > c2["parameters"]
    # The same trunk works on 4x fewer input pixels per output pixel at x4 than at x2.
    assert c4["flops_per_mpix"] < c2["flops_per_mpix"]
    dncnn = model_cost(build_model("dncnn"), probe=32)
    assert dncnn["flops_per_mpix"] == pytest.approx(2 * 9 * (3 * 64 + 15 * 64 * 64 + 64 * 3) * 1e6, rel=1e-3)


def test_seconds_per_mpix_is_the_median_after_warm_up():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.2 if len(calls) == 1 else 0.02)  # the first (warm-up) call is slow

    s = seconds_per_mpix(fn, 500_000, repeats=3, warmup=1)
    assert len(calls) == 4 and 0.035 <= s < 0.3  # 0.02 s per half megapixel, not the warm-up's 0.4
    with pytest.raises(ValueError):
        seconds_per_mpix(fn, 0)
