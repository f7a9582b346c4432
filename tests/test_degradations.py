import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medrestore.degradations import corrupt, to_float


def _flat_region(retina):
    # A 64x64 patch of mid-grey: no clipping, so the measured std is the noise's.
    return np.full((64, 64, 3), 128, np.uint8)


@pytest.mark.parametrize("sigma", [10, 25, 50])
def test_gaussian_noise_std_matches_sigma_on_flat_region(retina, sigma):
    flat = _flat_region(retina)
    noisy, params = corrupt(flat, {"kind": "gaussian", "sigma": sigma}, [1, 2, 3])
    measured = (noisy.astype(float) - flat).std()
    assert params == {"sigma": float(sigma)}
    assert measured == pytest.approx(sigma, rel=0.03)


def test_gaussian_noise_on_real_fundus_changes_psnr_as_expected(retina):
    crop = retina[500:756, 500:756]
    noisy, _ = corrupt(crop, {"kind": "gaussian", "sigma": 25}, [0])
    mse = ((noisy.astype(float) - crop) ** 2).mean()
    psnr = 10 * np.log10(255**2 / mse)
    assert 20.0 < psnr < 21.0  # 20.17 dB without clipping; clipping at 0 lowers the error a little


def test_blind_sigma_drawn_in_range_and_replayable(retina):
    crop = retina[600:664, 600:664]
    sigmas = []
    for i in range(50):
        a, pa = corrupt(crop, {"kind": "gaussian", "sigma_range": [0, 50]}, [7, i])
        b, pb = corrupt(crop, {"kind": "gaussian", "sigma_range": [0, 50]}, [7, i])
        assert np.array_equal(a, b) and pa == pb
        sigmas.append(pa["sigma"])
    assert 0 <= min(sigmas) and max(sigmas) <= 50
    assert np.std(sigmas) > 10  # spread over the range, not one value


def test_different_seeds_give_different_noise(retina):
    crop = retina[600:664, 600:664]
    a, _ = corrupt(crop, {"kind": "gaussian", "sigma": 25}, [1])
    b, _ = corrupt(crop, {"kind": "gaussian", "sigma": 25}, [2])
    assert not np.array_equal(a, b)


@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(1, 40), w=st.integers(1, 40), c=st.sampled_from([1, 3]),
    sigma=st.floats(0, 100), seed=st.integers(0, 2**32 - 1),
)
def test_gaussian_output_is_uint8_same_shape_any_input(h, w, c, sigma, seed):
    img = np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)
    out, params = corrupt(img, {"kind": "gaussian", "sigma": sigma}, [seed])
    assert out.shape == img.shape and out.dtype == np.uint8
    if sigma == 0:
        assert np.array_equal(out, img)


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(np.zeros((4, 4, 3), np.uint8), {"kind": "nope"}, [0])


def test_to_float_range(retina):
    f = to_float(retina)
    assert f.dtype == np.float32 and f.min() >= 0 and f.max() <= 1
