"""Tests of ``medrestore.degradations.resampling``'s way back up: ``upsample_bicubic`` is the one
bicubic upsampling, used by the ``bicubic`` baseline. Real images only."""

import numpy as np
import pytest

from medrestore.degradations import corrupt, sr_pair, to_float, upsample_bicubic
from medrestore.models.classical import bicubic


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_upsample_bicubic_is_the_bicubic_baseline_and_restores_the_hr_size(retina, scale):
    hr, lr, _ = sr_pair(retina[300:812, 300:812], {"kind": "downscale", "scale": scale}, [0])
    low = to_float(lr)
    up = upsample_bicubic(low, scale)
    assert up.shape == hr.shape and up.dtype == np.float32
    assert 0.0 <= up.min() and up.max() <= 1.0
    baseline = bicubic(low, 0.0, scale=scale)
    assert baseline.dtype == np.float32 and np.array_equal(baseline, up)
    # closer to the high-resolution image than repeating each low-resolution pixel
    blocky = np.repeat(np.repeat(low, scale, axis=0), scale, axis=1)
    target = to_float(hr)
    assert np.abs(up - target).mean() < np.abs(blocky - target).mean()


def test_upsample_bicubic_clips_overshoot_and_scale_one_is_a_copy(retina):
    noisy, _ = corrupt(retina[600:664, 600:664], {"kind": "gaussian", "sigma": 50}, [1])
    x = to_float(noisy) * 1.4 - 0.2  # values outside [0, 1]
    up = upsample_bicubic(x, 2)
    assert up.min() == 0.0 and up.max() == 1.0
    same = upsample_bicubic(x, 1)
    assert np.array_equal(same, x) and same is not x
    assert np.array_equal(bicubic(x, 0.0, scale=1), np.clip(x, 0.0, 1.0))  # the baseline clips at scale 1 too
