"""Statistical and property tests of the corruptions, on real fundus photographs only
(scikit-image's retina and CHASE_DB1). Each test is named after the claim it checks."""

import io
import json
from itertools import pairwise

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import ndimage as ndi
from scipy.special import ndtri

from medrestore.data.fov import detect_fov
from medrestore.degradations import (
    DEGRADATIONS,
    apply_spec,
    corrupt,
    spec_scale,
    sr_pair,
    to_float,
)

LUMA = np.array([0.299, 0.587, 0.114])


def _grey(image):
    return image.astype(np.float64) @ LUMA if image.ndim == 3 and image.shape[2] == 3 else image.astype(np.float64)


def _psnr(a, b):
    return 10 * np.log10(255.0**2 / ((a.astype(np.float64) - b) ** 2).mean())


def _resize(image, size):
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


@pytest.fixture(scope="module")
def retina512(retina):
    return _resize(retina, (512, 512))


@pytest.fixture(scope="module")
def fov512(retina512):
    return detect_fov(retina512)


@pytest.fixture(scope="module")
def retina_crop(retina):
    """256 x 256 inside the retina's FOV (no black surround, no pure white): flat-field statistics."""
    crop = retina[500:756, 500:756]
    assert crop.min() > 0 and crop.max() < 255
    return crop


def _central_sigma(resid, nominal):
    """Noise sd of 8-bit residuals from their central part only.

    The residual of a quantised Gaussian is round(n), so P(|r| <= k) = 2 * Phi((k + 0.5) / sd) - 1;
    solving that at k about 0.67 x nominal uses only values that clipping (more than one sd past
    the clean value, see the callers) cannot reach."""
    k = max(1, round(0.67 * nominal))
    share = np.mean(np.abs(resid) <= k)
    return (k + 0.5) / ndtri((1 + share) / 2)


def _radial_grid(shape, cx, cy):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.hypot(xx - cx, yy - cy)


def _high_frequency_share(image, cutoff=0.25):
    """Share of spectral energy above ``cutoff`` cycles/pixel in a Hann-windowed grey image."""
    g = _grey(image)
    g = g - g.mean()
    win = np.outer(np.hanning(g.shape[0]), np.hanning(g.shape[1]))
    power = np.abs(np.fft.fft2(g * win)) ** 2
    fy = np.fft.fftfreq(g.shape[0])[:, None]
    fx = np.fft.fftfreq(g.shape[1])[None, :]
    return power[np.hypot(fx, fy) > cutoff].sum() / power.sum()


# ------------------------------------------------------------------------------------------
# additive Gaussian (the original kind: its bytes must not change)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [10, 25, 50])
def test_gaussian_noise_std_matches_sigma_where_nothing_clips(retina_crop, sigma):
    noisy, params = corrupt(retina_crop, {"kind": "gaussian", "sigma": sigma}, [1, 2, 3])
    resid = noisy.astype(float) - retina_crop
    safe = (retina_crop >= sigma) & (retina_crop <= 255 - sigma)  # clipping only beyond 1 sd
    assert params == {"sigma": float(sigma)}
    assert safe.sum() > 20000
    assert _central_sigma(resid[safe], sigma) == pytest.approx(sigma, rel=0.03)
    assert abs(np.median(resid[safe])) <= 0.5 + 0.02 * sigma


def test_gaussian_noise_on_real_fundus_changes_psnr_as_expected(retina):
    crop = retina[500:756, 500:756]
    noisy, _ = corrupt(crop, {"kind": "gaussian", "sigma": 25}, [0])
    assert 20.0 < _psnr(noisy, crop) < 21.0  # 20.17 dB without clipping; clipping at 0 lowers the error a little


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


# ------------------------------------------------------------------------------------------
# Poisson, proportion-p, salt-and-pepper, speckle
# ------------------------------------------------------------------------------------------


def _binned_residual_stats(clean, noisy, values):
    """(mean, variance) of noisy - clean over the elements whose clean value is in each bin."""
    resid = noisy.astype(np.float64) - clean
    out = []
    for v in values:
        sel = np.abs(clean.astype(np.int16) - v) <= 2
        out.append((resid[sel].mean(), resid[sel].var(), sel.sum()))
    return np.array(out)


def test_poisson_variance_tracks_mean(retina_crop):
    peak = 500.0
    noisy, params = corrupt(retina_crop, {"kind": "poisson", "peak": peak}, [11])
    assert params == {"peak": peak}
    values = [20, 40, 60, 80, 100, 190, 210]  # well-populated grey levels; x + 4 sd < 255: no clipping
    stats = _binned_residual_stats(retina_crop, noisy, values)
    assert (stats[:, 2] > 500).all()
    expected_var = 255.0 * np.array(values) / peak + 1 / 12  # var(x) = x / peak on [0, 1], plus rounding
    assert stats[:, 1] == pytest.approx(expected_var, rel=0.1)
    assert np.abs(stats[:, 0]).max() < 0.6  # unbiased: the mean count is x * peak
    assert np.all(np.diff(stats[:, 1]) > 0)  # brighter is noisier


def test_poisson_fewer_photons_is_noisier(retina_crop):
    errs = [_psnr(corrupt(retina_crop, {"kind": "poisson", "peak": pk}, [3])[0], retina_crop) for pk in (10, 100, 1000)]
    assert errs[0] < errs[1] < errs[2]


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_gaussian_proportion_touches_about_p_of_the_pixels(retina_crop, p):
    sigma = 10
    noisy, params = corrupt(retina_crop, {"kind": "gaussian_proportion", "p": p, "sigma": sigma}, [5, int(p * 10)])
    assert params == {"p": p, "sigma": float(sigma)}
    changed = (noisy != retina_crop).any(axis=2)
    # a chosen pixel stays equal only if all 3 channels round to 0: (P|N(0,10)| < 0.5)^3 ~ 6e-5
    assert changed.mean() == pytest.approx(p, abs=0.01)
    resid = noisy.astype(float) - retina_crop
    safe = changed[..., None] & (retina_crop >= 4 * sigma) & (retina_crop <= 255 - 4 * sigma)
    assert resid[safe].std() == pytest.approx(np.hypot(sigma, np.sqrt(1 / 12)), rel=0.03)
    assert (resid[~changed] == 0).all()


def test_poisson_proportion_changes_p_times_nonzero_count_share(retina_crop):
    p, lam = 0.2, 1.0
    noisy, params = corrupt(retina_crop, {"kind": "poisson_proportion", "p": p, "lam": lam}, [9])
    assert params == {"p": p, "lam": lam, "count": 255.0}
    changed = noisy != retina_crop
    assert changed.mean() == pytest.approx(p * (1 - np.exp(-lam)), abs=0.01)
    assert (noisy[changed] == 255).all()  # Gondara2016 literal: one count on a [0, 1] image is white


def test_poisson_proportion_adds_p_lambda_counts_on_average(retina_crop):
    p, lam, count = 0.2, 5.0, 1.0
    noisy, _ = corrupt(retina_crop, {"kind": "poisson_proportion", "p": p, "lam": lam, "count": count}, [4])
    resid = noisy.astype(float) - retina_crop
    assert (resid >= 0).all()
    assert resid.mean() == pytest.approx(p * lam * count, rel=0.05)


@pytest.mark.parametrize("amount,ratio", [(0.05, 0.5), (0.2, 0.3)])
def test_salt_and_pepper_amount_and_ratio(retina_crop, amount, ratio):
    noisy, params = corrupt(retina_crop, {"kind": "salt_pepper", "amount": amount, "salt_ratio": ratio}, [2])
    assert params == {"amount": amount, "salt_ratio": ratio}
    salt = (noisy == 255).all(axis=2)
    pepper = (noisy == 0).all(axis=2)
    assert salt.mean() == pytest.approx(amount * ratio, abs=0.005)
    assert pepper.mean() == pytest.approx(amount * (1 - ratio), abs=0.005)
    untouched = ~(salt | pepper)
    assert np.array_equal(noisy[untouched], retina_crop[untouched])


def test_speckle_std_is_proportional_to_intensity(retina_crop):
    sigma = 40.0
    noisy, params = corrupt(retina_crop, {"kind": "speckle", "sigma": sigma}, [8])
    assert params == {"sigma": sigma}
    values = np.array([20, 40, 60, 80, 100])  # x + 4 sd < 255: no clipping
    stats = _binned_residual_stats(retina_crop, noisy, values)
    relative = np.sqrt(stats[:, 1] - 1 / 12) / values
    assert relative == pytest.approx(np.full(len(values), sigma / 255), rel=0.05)


# ------------------------------------------------------------------------------------------
# blur and JPEG
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec,kept",
    [
        ({"kind": "gaussian_blur", "sigma": 2.0}, 0.2),
        ({"kind": "defocus_blur", "radius": 4}, 0.2),
        ({"kind": "motion_blur", "length": 11}, 0.4),  # smooths one direction only
        ({"kind": "fundus_blur", "sigma_range": [5, 5]}, 0.2),
    ],
    ids=lambda s: s["kind"] if isinstance(s, dict) else str(s),
)
def test_blur_removes_high_frequencies_and_keeps_the_mean(retina, spec, kept):
    crop = retina[400:656, 400:656]
    out, _ = corrupt(crop, spec, [1])
    assert _high_frequency_share(out) < kept * _high_frequency_share(crop)
    assert out.astype(float).mean() == pytest.approx(crop.mean(), abs=1.0)


def test_stronger_gaussian_blur_removes_more_detail(retina):
    crop = retina[400:656, 400:656]
    shares = [_high_frequency_share(corrupt(crop, {"kind": "gaussian_blur", "sigma": s}, [0])[0],
                                    0.1) for s in (0.5, 1, 2, 4)]
    assert all(a > b for a, b in pairwise(shares))


def test_motion_blur_smears_along_its_angle(retina):
    crop = retina[400:656, 400:656]

    def kept(angle, axis):  # share of gradient energy left along an axis (1 = x = horizontal)
        out, params = corrupt(crop, {"kind": "motion_blur", "length": 15, "angle": angle}, [0])
        assert params["angle"] == angle and params["length"] == 15
        return (np.diff(_grey(out), axis=axis) ** 2).mean() / (np.diff(_grey(crop), axis=axis) ** 2).mean()

    assert kept(0, 1) < 0.5 * kept(0, 0)  # horizontal motion: horizontal detail goes first
    assert kept(90, 0) < 0.5 * kept(90, 1)
    assert 2 / 3 < kept(45, 0) / kept(45, 1) < 3 / 2  # diagonal: both alike


def test_motion_blur_angle_is_drawn_when_not_given(retina):
    crop = retina[600:664, 600:664]
    angles = [corrupt(crop, {"kind": "motion_blur", "length": 7}, [i])[1]["angle"] for i in range(30)]
    assert 0 <= min(angles) and max(angles) < 180 and np.std(angles) > 30


def test_jpeg_low_quality_lowers_psnr_high_quality_barely(retina512, chase_image):
    for image in (retina512, chase_image):
        low, pl = corrupt(image, {"kind": "jpeg", "quality": 10}, [0])
        high, ph = corrupt(image, {"kind": "jpeg", "quality": 95}, [0])
        assert pl == {"quality": 10} and ph == {"quality": 95}
        assert _psnr(low, image) < 34 and _psnr(high, image) > 42
        assert _psnr(high, image) - _psnr(low, image) > 10


def test_jpeg_psnr_rises_with_quality_on_a_resampled_image(retina512):
    # (not on CHASE as stored: it is itself a JPEG, and re-encoding near its own quality is almost
    # lossless, so PSNR there is not monotone in quality)
    psnrs = [_psnr(corrupt(retina512, {"kind": "jpeg", "quality": q}, [0])[0], retina512) for q in (10, 30, 50, 75, 90)]
    assert all(a < b for a, b in pairwise(psnrs))


def test_jpeg_matches_a_standard_rgb_codec(chase_image):
    # PIL's libjpeg encoder, given RGB: the same bytes, so the channel order reaches OpenCV right
    for q in (10, 50, 90):
        out, _ = corrupt(chase_image, {"kind": "jpeg", "quality": q}, [0])
        buf = io.BytesIO()
        Image.fromarray(chase_image).save(buf, "JPEG", quality=q)
        reference = np.asarray(Image.open(buf))
        assert np.abs(out.astype(int) - reference).mean() < 0.05


def test_jpeg_quality_range_is_drawn_as_integers(retina):
    crop = retina[600:664, 600:664]
    qs = [corrupt(crop, {"kind": "jpeg", "quality_range": [20, 40]}, [i])[1]["quality"] for i in range(30)]
    assert all(isinstance(q, int) and 20 <= q <= 40 for q in qs) and len(set(qs)) > 5


# ------------------------------------------------------------------------------------------
# super-resolution inputs
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 4])
def test_downscale_output_is_scale_times_smaller_and_pairs_with_modcropped_hr(retina, scale):
    image = retina[500:703, 600:750]  # 203 x 150: not a multiple of 4
    hr, lr, params = sr_pair(image, {"kind": "downscale", "scale": scale}, [0])
    assert params == {"scale": scale}
    assert lr.shape == (203 // scale, 150 // scale, 3) and lr.dtype == np.uint8
    assert hr.shape == (lr.shape[0] * scale, lr.shape[1] * scale, 3)
    assert np.array_equal(hr, image[: hr.shape[0], : hr.shape[1]])
    assert lr.astype(float).mean() == pytest.approx(hr.mean(), abs=0.5)
    # aligned with the crop: each LR pixel is close to the mean of its HR block, even far from the
    # top-left corner (resizing the uncropped image would drift by up to scale - 1 HR pixels)
    h, w = lr.shape[:2]
    block_mean = hr.astype(float).reshape(h, scale, w, scale, 3).mean(axis=(1, 3))
    assert np.abs(lr - block_mean)[h // 2 :, w // 2 :].mean() < 0.4


def test_bicubic_downscale_is_antialiased(retina):
    hr = retina[400:656, 400:656]
    lr, _ = corrupt(hr, {"kind": "downscale", "scale": 4}, [0])
    block_mean = hr.astype(float).reshape(64, 4, 64, 4, 3).mean(axis=(1, 3))
    decimated = hr[1::4, 1::4].astype(float)  # no antialiasing
    assert np.abs(lr - block_mean).mean() < 0.5 * np.abs(decimated - block_mean).mean()


def test_blur_downscale_is_blurrier_than_plain_downscale(retina):
    hr = retina[400:656, 400:656]
    plain, _ = corrupt(hr, {"kind": "downscale", "scale": 2}, [0])
    blurred, params = corrupt(hr, {"kind": "blur_downscale", "scale": 2, "sigma_range": [1.5, 2.5]}, [0])
    assert blurred.shape == plain.shape == (128, 128, 3)
    assert 1.5 <= params["sigma"] <= 2.5 and params["scale"] == 2
    assert _high_frequency_share(blurred, 0.2) < 0.5 * _high_frequency_share(plain, 0.2)


def test_chain_scale_is_the_product_and_shrinks_the_fov(retina512, fov512):
    steps = [{"kind": "downscale", "scale": 2}, {"kind": "fundus_blur"},
             {"kind": "blur_downscale", "scale": 2, "sigma": 1}]
    spec = {"kind": "chain", "steps": steps}
    assert spec_scale(spec) == 4
    hr, lr, params = sr_pair(retina512, spec, [1], fov=fov512)
    assert lr.shape == (128, 128, 3) and hr.shape == (512, 512, 3)
    assert [sorted(p) for p in params["steps"]] == [["scale"], ["sigma", "sigma_at_reference"], ["scale", "sigma"]]
    small_fov = fov512.reshape(256, 2, 256, 2).mean(axis=(1, 3)) >= 0.5
    # the fundus step ran at 256 x 256 with the shrunk FOV: zero outside it, then one more blur/downscale
    core_outside = ~ndi.binary_dilation(small_fov.reshape(128, 2, 128, 2).any(axis=(1, 3)), iterations=4)
    assert lr[core_outside].max() == 0


# ------------------------------------------------------------------------------------------
# fundus (cofe-Net) and cataract (ArcNet)
# ------------------------------------------------------------------------------------------

FUNDUS_KINDS = ["fundus_colour", "fundus_halo", "fundus_hole", "fundus_spots", "fundus_blur", "cataract",
                "fundus_random"]


@pytest.mark.parametrize("kind", FUNDUS_KINDS)
def test_fundus_corruption_is_zero_outside_fov_and_changes_inside(retina512, fov512, kind):
    for seed in range(3):
        out, _ = corrupt(retina512, {"kind": kind}, [seed], fov=fov512)
        assert out.shape == retina512.shape
        assert out[~fov512].max() == 0
        moved = np.abs(out[fov512].astype(int) - retina512[fov512]).max(axis=1)
        assert moved.max() > 10 and (moved > 2).mean() > 0.002  # spots touch only a few percent


def test_fundus_corruption_without_fov_uses_the_whole_frame(retina512):
    whole = np.ones(retina512.shape[:2], bool)
    for kind in FUNDUS_KINDS:
        a, pa = corrupt(retina512, {"kind": kind}, [3])
        b, pb = corrupt(retina512, {"kind": kind}, [3], fov=whole)
        assert np.array_equal(a, b) and pa == pb


def test_fov_of_wrong_shape_is_refused(retina512):
    with pytest.raises(ValueError, match="FOV mask shape"):
        corrupt(retina512, {"kind": "fundus_halo"}, [0], fov=np.ones((10, 10), bool))


def test_halo_brightens_the_periphery_more_than_the_centre(retina512, fov512):
    h, w = fov512.shape
    radius = np.sqrt(fov512.sum() / np.pi)
    r = _radial_grid((h, w), w / 2, h / 2) / radius
    clean = _grey(retina512)
    for seed in range(8):
        out, params = corrupt(retina512, {"kind": "fundus_halo"}, [seed], fov=fov512)
        gain = _grey(out) - clean
        assert (out[fov512].astype(int) >= retina512[fov512]).all()  # light is only added
        assert gain[fov512 & (r > 0.85)].mean() > gain[fov512 & (r < 0.3)].mean() + 3
        assert 0.75 * 512 <= params["inner_diameter"] <= 512 and params["tint"] in (1, 2)  # cofe-Net's reachable tints
        assert abs(params["cx"] - 256) <= 64 and abs(params["cy"] - 256) <= 64


def test_hole_darkens_its_disc_and_only_darkens(retina512, fov512):
    clean = _grey(retina512)
    for seed in range(6):
        out, p = corrupt(retina512, {"kind": "fundus_hole"}, [seed], fov=fov512)
        assert 0.4 * 512 <= p["diameter"] <= 0.7 * 512 and 0.26 < p["depth"] < 0.3
        assert (out[fov512].astype(int) <= retina512[fov512]).all()
        loss = clean - _grey(out)
        r = _radial_grid(fov512.shape, p["cx"], p["cy"]) / p["diameter"]
        assert loss[fov512 & (r < 0.2)].mean() > 40  # about 0.27 * 255, less where blue clips at 0
        far = fov512 & (r >= np.quantile(r[fov512], 0.9))
        assert loss[fov512 & (r < 0.2)].mean() > 3 * loss[far].mean()


def test_hole_spares_images_that_are_already_dark(retina512, fov512):
    dark = (retina512 * 0.4).astype(np.uint8)  # FOV mean about 0.17 < 0.25
    out, p = corrupt(dark, {"kind": "fundus_hole"}, [0], fov=fov512)
    assert p["depth"] == 0.0
    assert np.array_equal(out[fov512], dark[fov512])


def test_spots_only_brighten_and_sit_where_params_say(retina512, fov512):
    sizes, amps = [], []
    for seed in range(4):
        out, p = corrupt(retina512, {"kind": "fundus_spots"}, [seed], fov=fov512)
        assert 5 <= p["count"] <= 10
        assert len(p["spots"]) == p["count"]
        assert (out[fov512].astype(int) >= retina512[fov512]).all()
        green_gain = out[..., 1].astype(float) - retina512[..., 1]  # green (about 75) does not clip
        for cx, cy, size, amp in p["spots"]:
            assert fov512[int(cy), int(cx)] and 0.01 * 512 <= size <= 0.05 * 512
            assert green_gain[int(cy), int(cx)] >= 0.6 * amp * 255
            sizes.append(size)
            amps.append(amp)
    # cofe-Net's scattering formula: larger spots are brighter (it flattens near the top size),
    # from about 0.06 to 0.21
    rank_corr = np.corrcoef(np.argsort(np.argsort(sizes)), np.argsort(np.argsort(amps)))[0, 1]
    assert rank_corr > 0.9
    assert 0.05 < min(amps) and max(amps) < 0.21 and max(amps) > 2 * min(amps)


def test_fundus_blur_cofe_kernel_is_milder_than_the_full_gaussian(retina512, fov512):
    inner = ndi.binary_erosion(fov512, iterations=20)
    pairs = inner[:, 1:] & inner[:, :-1]

    def detail(x):  # horizontal gradient energy well inside the FOV
        return (np.diff(_grey(x), axis=1) ** 2)[pairs].mean()

    for seed in range(3):
        full, pf = corrupt(retina512, {"kind": "fundus_blur"}, [seed], fov=fov512)
        cofe, pc = corrupt(retina512, {"kind": "fundus_blur", "kernel": "cofe"}, [seed], fov=fov512)
        assert pf["sigma"] == pc["sigma"]
        for k in (pc["kernel_w"], pc["kernel_h"]):
            assert k % 2 == 1 and int(pc["sigma"] / 3) <= k <= int(pc["sigma"] / 2) + 1
        assert detail(retina512) >= detail(cofe) > 4 * detail(full)


def test_fundus_blur_sigma_scales_with_resolution(retina):
    small, large = _resize(retina, (256, 256)), _resize(retina, (768, 768))
    _, ps = corrupt(small, {"kind": "fundus_blur"}, [5])
    _, pl = corrupt(large, {"kind": "fundus_blur"}, [5])
    assert 5 <= ps["sigma_at_reference"] <= 15 and ps["sigma_at_reference"] == pl["sigma_at_reference"]
    assert ps["sigma"] == pytest.approx(ps["sigma_at_reference"] / 2)
    assert pl["sigma"] == pytest.approx(pl["sigma_at_reference"] * 1.5)


def test_colour_factors_follow_cofe_net_ranges(retina512, fov512):
    for seed in range(20):
        _, p = corrupt(retina512, {"kind": "fundus_colour"}, [seed], fov=fov512)
        assert 0.7 <= p["brightness"] <= 1.2 and 0.6 <= p["contrast"] <= 1.4 and 0.6 <= p["saturation"] <= 1.4


def test_colour_brightness_contrast_saturation_do_what_they_say(retina512, fov512):
    fixed = {"brightness_range": [1, 1], "contrast_range": [1, 1], "saturation_range": [1, 1]}
    same, _ = corrupt(retina512, {"kind": "fundus_colour", **fixed}, [0], fov=fov512)
    assert np.abs(same[fov512].astype(int) - retina512[fov512]).max() <= 1

    darker, _ = corrupt(retina512, {"kind": "fundus_colour", **fixed, "brightness_range": [0.8, 0.8]}, [0], fov=fov512)
    assert darker[fov512].astype(float) == pytest.approx(0.8 * retina512[fov512], abs=1.0)

    flat, _ = corrupt(retina512, {"kind": "fundus_colour", **fixed, "contrast_range": [0.5, 0.5]}, [0], fov=fov512)
    assert _grey(flat)[fov512].std() == pytest.approx(0.5 * _grey(retina512)[fov512].std(), rel=0.03)

    grey, _ = corrupt(retina512, {"kind": "fundus_colour", **fixed, "saturation_range": [0, 0]}, [0], fov=fov512)
    assert np.ptp(grey[fov512].astype(int), axis=1).max() <= 1


@pytest.mark.parametrize("which", ["retina", "chase"])
def test_cataract_haze_lowers_local_contrast_inside_fov(retina512, fov512, chase_image, which):
    """The veil pulls every channel towards its maximum: vessel-scale detail (the grey image minus
    its local mean) falls. (The whole-FOV std need not fall: the haze map is a brightness gradient.)"""
    image, fov = (retina512, fov512) if which == "retina" else (_resize(chase_image, (500, 480)), None)
    fov = detect_fov(image) if fov is None else fov
    inner = ndi.binary_erosion(fov, iterations=15)

    def detail(x):
        g = _grey(x).astype(np.float32)
        return (g - cv2.GaussianBlur(g, (0, 0), 4))[inner].std()

    for seed in range(6):
        out, p = corrupt(image, {"kind": "cataract"}, [seed], fov=fov)
        assert detail(out) < 0.75 * detail(image)
        assert 0.6 <= p["haze"] <= 0.8 and p["kernel_at_reference"] in (1, 3, 5, 7)


def test_cataract_haze_is_strongest_far_from_its_centre(retina512, fov512):
    # flat brightness and colour so only the veil moves values; far from the centre, dark channels rise
    fixed = {"contrast_range": [1, 1], "brightness_range": [1, 1], "saturation_range": [1, 1], "kernel_choices": [1]}
    out, p = corrupt(retina512, {"kind": "cataract", **fixed}, [2], fov=fov512)
    r = _radial_grid(fov512.shape, p["cx"], p["cy"])
    r = r / r[fov512].max()
    gain_blue = out[..., 2].astype(float) - retina512[..., 2]
    assert gain_blue[fov512 & (r > 0.8)].mean() > gain_blue[fov512 & (r < 0.2)].mean() + 20


def test_fundus_random_draws_cofe_net_s_seven_combinations_evenly(retina512):
    tiny = _resize(retina512, (48, 48))
    draws = [corrupt(tiny, {"kind": "fundus_random"}, [i])[1] for i in range(280)]
    combos = [tuple(d["groups"]) for d in draws]
    assert all(combos)  # never empty
    counts = {c: combos.count(c) for c in set(combos)}
    assert len(counts) == 7 and min(counts.values()) >= 20  # about 40 each
    for d in draws:  # illumination is colour, halo, hole in that order; then spots; then blur
        expected = [k for g in d["groups"] for k in {"illumination": ["colour", "halo", "hole"], "spots": ["spots"],
                                                     "blur": ["blur"]}[g]]
        assert [s["kind"] for s in d["steps"]] == [f"fundus_{k}" for k in expected]


def test_fundus_random_probabilities_and_options_are_honoured(retina512, fov512):
    spec = {
        "kind": "fundus_random",
        "probabilities": {"illumination": 0, "spots": 0, "blur": 1},
        "options": {"blur": {"sigma_range": [7, 7]}},
    }
    out, p = corrupt(retina512, spec, [0], fov=fov512)
    assert p["groups"] == ["blur"] and p["steps"][0]["kind"] == "fundus_blur" and p["steps"][0]["sigma"] == 7
    alone, _ = corrupt(retina512, {"kind": "fundus_blur", "sigma_range": [7, 7]}, [0], fov=fov512)
    assert np.array_equal(out, alone)
    with pytest.raises(ValueError, match="unknown factor"):
        corrupt(retina512, {"kind": "fundus_random", "probabilities": {"glare": 1}}, [0])
    with pytest.raises(ValueError, match="unknown component"):
        corrupt(retina512, {"kind": "fundus_random", "options": {"glare": {}}}, [0])


# ------------------------------------------------------------------------------------------
# chains, replay, params
# ------------------------------------------------------------------------------------------


def test_chain_of_one_step_equals_the_step_and_shares_one_rng(retina_crop):
    single, ps = corrupt(retina_crop, {"kind": "gaussian", "sigma": 15}, [6])
    chained, pc = corrupt(retina_crop, {"kind": "chain", "steps": [{"kind": "gaussian", "sigma": 15}]}, [6])
    assert np.array_equal(single, chained) and pc == {"steps": [ps]}
    # two noise steps draw different noise from the one stream: std adds in quadrature
    two, p2 = corrupt(retina_crop,
                      {"kind": "chain",
                       "steps": [{"kind": "gaussian", "sigma": 15}, {"kind": "gaussian", "sigma": 20}]}, [6])
    assert p2 == {"steps": [{"sigma": 15.0}, {"sigma": 20.0}]}
    resid = two.astype(float) - retina_crop
    safe = (retina_crop >= 100) & (retina_crop <= 155)
    assert resid[safe].std() == pytest.approx(25.0, rel=0.04)


def test_chain_order_matters(retina_crop):
    blur_then_noise = {"kind": "chain",
                       "steps": [{"kind": "gaussian_blur", "sigma": 3}, {"kind": "gaussian", "sigma": 10}]}
    noise_then_blur = {"kind": "chain",
                       "steps": [{"kind": "gaussian", "sigma": 10}, {"kind": "gaussian_blur", "sigma": 3}]}
    a, _ = corrupt(retina_crop, blur_then_noise, [0])
    b, _ = corrupt(retina_crop, noise_then_blur, [0])
    assert _high_frequency_share(a) > 5 * _high_frequency_share(b)


# One spec per kind: every registered kind must be listed here (see the coverage test).
REPLAY_SPECS = {
    "gaussian": {"sigma_range": [0, 50]},
    "poisson": {"peak_range": [5, 100]},
    "gaussian_proportion": {"p_range": [0.1, 0.5], "sigma_range": [1, 50]},
    "poisson_proportion": {"p": 0.2, "lam_range": [1, 5]},
    "salt_pepper": {"amount_range": [0.01, 0.1]},
    "speckle": {"sigma_range": [10, 60]},
    "gaussian_blur": {"sigma_range": [0.5, 3]},
    "defocus_blur": {"radius_range": [1, 6]},
    "motion_blur": {"length_range": [3, 15]},
    "jpeg": {"quality_range": [5, 60]},
    "downscale": {"scale": 2},
    "blur_downscale": {"scale": 2, "sigma_range": [0.5, 2]},
    "fundus_colour": {},
    "fundus_halo": {},
    "fundus_hole": {},
    "fundus_spots": {},
    "fundus_blur": {},
    "cataract": {},
    "chain": {"steps": [{"kind": "fundus_halo"}, {"kind": "motion_blur", "length": 5},
                        {"kind": "gaussian", "sigma_range": [0, 20]}]},
    "fundus_random": {},
}


def test_replay_specs_cover_every_kind():
    assert set(REPLAY_SPECS) == set(DEGRADATIONS)


@pytest.mark.parametrize("kind", sorted(REPLAY_SPECS))
def test_every_kind_replays_byte_identically_with_json_params(chase_image, kind):
    image = _resize(chase_image, (160, 154))
    fov = detect_fov(image)
    spec = {"kind": kind, **REPLAY_SPECS[kind]}
    a, pa = corrupt(image, spec, [2026, 7, len(kind)], fov=fov)
    b, pb = corrupt(image, spec, [2026, 7, len(kind)], fov=fov)
    assert np.array_equal(a, b) and pa == pb
    assert json.loads(json.dumps(pa)) == pa  # JSON round trip loses nothing
    assert a.shape[0] == image.shape[0] // spec_scale(spec) and a.dtype == np.uint8
    if kind != "downscale":  # the only kind with nothing random
        c, pc = corrupt(image, spec, [2026, 8, len(kind)], fov=fov)
        assert not (np.array_equal(a, c) and pa == pc)


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(np.zeros((4, 4, 3), np.uint8), {"kind": "nope"}, [0])


def test_fixed_and_range_together_are_refused(retina_crop):
    with pytest.raises(ValueError, match="not both"):
        corrupt(retina_crop, {"kind": "poisson", "peak": 10, "peak_range": [1, 2]}, [0])


def test_non_uint8_images_are_refused(retina_crop):
    with pytest.raises(TypeError, match="uint8"):
        corrupt(retina_crop.astype(np.float32) / 255, {"kind": "gaussian", "sigma": 5}, [0])


def test_to_float_range(retina):
    f = to_float(retina)
    assert f.dtype == np.float32 and f.min() >= 0 and f.max() <= 1


# ------------------------------------------------------------------------------------------
# properties over shapes, channel counts, layouts and value ranges
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_pool(retina):
    """Pixels of the real photograph to cut hypothesis' images from."""
    return _resize(retina, (200, 200))


@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(1, 40), w=st.integers(1, 40), c=st.sampled_from([1, 3]),
    sigma=st.floats(0, 100), seed=st.integers(0, 2**32 - 1),
)
def test_gaussian_output_is_uint8_same_shape_any_input(h, w, c, sigma, seed):
    img = np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)
    out, _ = corrupt(img, {"kind": "gaussian", "sigma": sigma}, [seed])
    assert out.shape == img.shape and out.dtype == np.uint8
    if sigma == 0:
        assert np.array_equal(out, img)


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(sorted(REPLAY_SPECS)),
    h=st.integers(2, 36), w=st.integers(2, 36),
    layout=st.sampled_from(["rgb", "grey3d", "grey2d"]),
    values=st.sampled_from(["real", "black", "white", "scaled"]),
    top=st.integers(0, 150), left=st.integers(0, 150), seed=st.integers(0, 2**32 - 1),
)
def test_every_kind_gives_uint8_of_the_expected_shape_for_any_real_cut(
    real_pool, kind, h, w, layout, values, top, left, seed
):
    img = real_pool[top : top + h, left : left + w].copy()
    if values == "black":
        img[:] = 0
    elif values == "white":
        img[:] = 255
    elif values == "scaled":
        img = (img * 0.3).astype(np.uint8)
    if layout != "rgb":
        img = img[..., 1:2] if layout == "grey3d" else img[..., 1]
    spec = {"kind": kind, **REPLAY_SPECS[kind]}
    out, params = corrupt(img, spec, [seed])
    s = spec_scale(spec)
    assert out.dtype == np.uint8 and out.ndim == img.ndim
    assert out.shape[:2] == (img.shape[0] // s, img.shape[1] // s) and out.shape[2:] == img.shape[2:]
    json.dumps(params)
    again, _ = corrupt(img, spec, [seed])
    assert np.array_equal(out, again)


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(sorted(REPLAY_SPECS)),
    dtype=st.sampled_from([np.float32, np.float64]),
    lo=st.floats(0, 1), hi=st.floats(0, 1), seed=st.integers(0, 2**32 - 1),
)
def test_every_kind_accepts_float_images_in_any_subrange(real_pool, kind, dtype, lo, hi, seed):
    """The float API (what ``corrupt`` calls): float32 or float64 in any part of [0, 1]; the output
    is finite float32 and replays."""
    lo, hi = min(lo, hi), max(lo, hi)
    img = (lo + (hi - lo) * real_pool[40:72, 60:90].astype(dtype) / 255).astype(dtype)
    spec = {"kind": kind, **REPLAY_SPECS[kind]}
    out, _ = apply_spec(img, spec, np.random.default_rng(seed))
    again, _ = apply_spec(img, spec, np.random.default_rng(seed))
    assert out.dtype == np.float32 and np.isfinite(out).all() and np.array_equal(out, again)
    s = spec_scale({"kind": kind, **REPLAY_SPECS[kind]})
    assert out.shape == (32 // s, 30 // s, 3)
