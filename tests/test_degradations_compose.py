"""Tests of ``medrestore.degradations.compose``'s named quantities: the noise level and the blur width a
corruption drew, read back from its spec and recorded params (and the evaluation's ``case_sigma``,
which hands the noise level to NL-means and BM3D and plots results against it). Real images only."""

import math

import numpy as np
import pytest
from PIL import Image

from medrestore.data.fov import detect_fov
from medrestore.degradations import blur_sigma, corrupt, noise_sigma
from medrestore.evaluation import scoring as E


@pytest.fixture(scope="module")
def crop(retina):
    """256 x 256 inside the retina's FOV, no pure black or white."""
    return retina[500:756, 500:756]


@pytest.fixture(scope="module")
def retina256(retina):
    return np.asarray(Image.fromarray(retina).resize((256, 256), Image.Resampling.LANCZOS))


def test_a_blur_task_yields_no_noise_sigma(crop):
    spec = {"kind": "gaussian_blur", "sigma": 1.5}
    blurred, params = corrupt(crop, spec, [0])
    assert not np.array_equal(blurred, crop)
    # The record alone is the same as a noise's: only the spec says which it is.
    assert params == corrupt(crop, {"kind": "gaussian", "sigma": 1.5}, [0])[1] == {"sigma": 1.5}
    assert noise_sigma(spec, params) == 0.0
    assert blur_sigma(spec, params) == 1.5
    assert E.case_sigma(params, spec) == 0.0


def test_krenz_blur_downscale_is_a_blur_not_a_noise(crop):
    spec = {"kind": "blur_downscale", "scale": 2, "sigma_range": [0.5, 2.0]}
    _, params = corrupt(crop, spec, [3])
    assert noise_sigma(spec, params) == 0.0 and E.case_sigma(params, spec) == 0.0
    assert blur_sigma(spec, params) == params["sigma"]


def test_a_chain_s_gaussian_sigma_is_found_and_is_the_noise_in_the_pixels(crop):
    spec = {"kind": "chain",
            "steps": [{"kind": "gaussian_blur", "sigma": 1.0}, {"kind": "gaussian", "sigma_range": [15, 35]}]}
    noisy, params = corrupt(crop, spec, [4, 2])
    drawn = params["steps"][1]["sigma"]
    assert 15 <= drawn <= 35
    assert noise_sigma(spec, params) == drawn and E.case_sigma(params, spec) == drawn
    assert blur_sigma(spec, params) == 1.0
    # The blur draws nothing, so the blurred image alone is the chain without its noise.
    blurred, _ = corrupt(crop, spec["steps"][0], [0])
    resid = noisy.astype(np.float64) - blurred
    safe = (blurred >= 3 * drawn) & (blurred <= 255 - 3 * drawn)  # nothing clips
    assert safe.sum() > 20000
    assert resid[safe].std() == pytest.approx(drawn, rel=0.03)


def test_noises_add_in_quadrature_and_blurs_count_in_input_pixels(crop):
    spec = {
        "kind": "chain",
        "steps": [
            {"kind": "blur_downscale", "scale": 2, "sigma": 1.2},
            {"kind": "gaussian_blur", "sigma": 0.8},  # at half the resolution: 1.6 input pixels
            {"kind": "gaussian", "sigma": 12},
            {"kind": "speckle", "sigma": 9},
            {"kind": "jpeg", "quality": 90},
        ],
    }
    _, params = corrupt(crop, spec, [1])
    assert noise_sigma(spec, params) == pytest.approx(15.0)
    assert blur_sigma(spec, params) == pytest.approx(2.0)


def test_fundus_light_maps_are_neither_noise_nor_blur(retina256):
    """fundus_halo and fundus_hole record the smoothing of their light maps as ``sigma``; only
    fundus_blur's is a blur of the image, and none is noise."""
    fov = detect_fov(retina256)
    spec = {"kind": "fundus_random", "probabilities": {"illumination": 1, "spots": 0, "blur": 1}}
    _, params = corrupt(retina256, spec, [6], fov=fov)
    sigmas = {step["kind"]: step["sigma"] for step in params["steps"] if "sigma" in step}
    assert set(sigmas) == {"fundus_halo", "fundus_hole", "fundus_blur"}
    assert noise_sigma(spec, params) == 0.0 and E.case_sigma(params, spec) == 0.0
    assert blur_sigma(spec, params) == sigmas["fundus_blur"]
    nested = {"kind": "chain", "steps": [spec, {"kind": "gaussian", "sigma": 5}]}
    _, nested_params = corrupt(retina256, nested, [6], fov=fov)
    assert noise_sigma(nested, nested_params) == 5.0
    assert blur_sigma(nested, nested_params) == sigmas["fundus_blur"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"kind": "gaussian", "sigma": 25}, 25.0),
        ({"kind": "downscale", "scale": 4}, 0.0),
        ({"kind": "chain", "steps": [{"kind": "downscale", "scale": 4}, {"kind": "gaussian", "sigma": 25}]}, 25.0),
        ({"kind": "cataract"}, 0.0),
        ({"kind": "chain",
          "steps": [{"kind": "fundus_random", "options": {"blur": {"kernel": "cofe"}}}, {"kind": "cataract"}]}, 0.0),
    ],
)
def test_the_default_tasks_noise_sigma_is_what_the_params_alone_gave(retina256, spec, expected):
    """params.yaml's test specs: the spec-aware reading gives the same numbers as the old reading of
    the params alone, so the evaluation's ``sigma`` column does not change for them."""
    _, params = corrupt(retina256, spec, [2026, 3], fov=detect_fov(retina256))
    assert E.case_sigma(params, spec) == E.case_sigma(params) == expected


def test_params_that_are_not_the_spec_s_record_are_refused(crop):
    spec = {"kind": "chain", "steps": [{"kind": "gaussian", "sigma": 5}, {"kind": "gaussian", "sigma": 5}]}
    _, params = corrupt(crop, spec, [0])
    assert noise_sigma(spec, params) == pytest.approx(math.hypot(5, 5))
    with pytest.raises(ValueError, match="2 steps has params of 1"):
        noise_sigma(spec, {"steps": params["steps"][:1]})
