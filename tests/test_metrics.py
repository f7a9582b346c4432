import glob
from pathlib import Path

import numpy as np
import pytest

from medrestore.core.io import read_image
from medrestore.degradations import corrupt
from medrestore.evaluation.metrics import (
    COLUMNS,
    FULL,
    FULL_REFERENCE,
    LOWER_IS_BETTER,
    METRICS,
    NO,
    NO_REFERENCE,
    PAIRED,
    REGISTRY,
    VESSEL,
    VESSEL_KEYS,
    VESSEL_REFERENCES,
    all_metrics,
    asset_path,
    digits,
    full_reference,
    header,
    metric,
    no_reference,
)

# ../shared/assets/README.md: pyiqa 0.1.16 with the provided parameter files.
CALIBRATION = {
    "I03.bmp": (15.6558, 94.6440),
    "I04.bmp": (3.6549, -0.1152),
    "I06.bmp": (3.2342, 1.0748),
    "I08.bmp": (3.1917, 5.1383),
    "I19.bmp": (9.0727, 66.8348),
}


def _calibration_dir() -> Path:
    import pyiqa

    hits = glob.glob(str(Path(pyiqa.__file__).parents[1] / "ResultsCalibra" / "dist_dir"))
    assert hits, "pyiqa's ResultsCalibra/dist_dir not found beside the installed package"
    return Path(hits[0])


def test_assets_are_found_in_the_configured_folder(assets_dir):
    assert asset_path("niqe", assets_dir).endswith("niqe_modelparameters.mat")
    assert asset_path("brisque", assets_dir).endswith("brisque_svm_weights.pth")


@pytest.mark.parametrize("name", sorted(CALIBRATION))
def test_niqe_and_brisque_match_calibration(assets_dir, name):
    image = read_image(_calibration_dir() / name)
    scores = no_reference(image, str(assets_dir))
    niqe, brisque = CALIBRATION[name]
    assert scores["niqe"] == pytest.approx(niqe, abs=0.01)
    assert scores["brisque"] == pytest.approx(brisque, abs=0.01)


def test_full_reference_on_noisy_fundus(retina, assets_dir):
    crop = retina[500:756, 500:756]
    noisy, _ = corrupt(crop, {"kind": "gaussian", "sigma": 25}, [0])
    m = full_reference(noisy, crop, None, str(assets_dir))
    assert 20 < m["psnr"] < 21.5 and m["psnr_fov"] == pytest.approx(m["psnr"], abs=0.02)
    assert m["ssim"] < 0.6
    same = full_reference(crop, crop, None, str(assets_dir))
    assert same["ssim"] == pytest.approx(1.0) and same["psnr"] > 60


def test_fov_psnr_ignores_pixels_outside_the_mask(retina, assets_dir):
    crop = retina[500:628, 500:628].copy()
    damaged = crop.copy()
    damaged[:, :64] = 0
    fov = np.zeros(crop.shape[:2], bool)
    fov[:, 64:] = True
    m = full_reference(damaged, crop, fov, str(assets_dir))
    assert m["psnr_fov"] == float("inf") and m["psnr"] < 20


def test_noise_worsens_niqe_and_brisque(retina, assets_dir):
    crop = retina[400:784, 400:784]
    noisy, _ = corrupt(crop, {"kind": "gaussian", "sigma": 25}, [0])
    clean_m, noisy_m = all_metrics(crop, assets_dir=str(assets_dir)), all_metrics(noisy, assets_dir=str(assets_dir))
    assert noisy_m["brisque"] > clean_m["brisque"] and noisy_m["niqe"] > clean_m["niqe"]
    assert noisy_m["entropy"] > clean_m["entropy"]


def test_fov_variants_equal_whole_image_without_a_mask_and_ssim_is_pyiqas(chase_image, assets_dir):
    import pyiqa
    import torch

    crop = chase_image[300:428, 400:528]
    noisy, _ = corrupt(crop, {"kind": "gaussian", "sigma": 15}, [2])
    m = full_reference(noisy, crop, None, str(assets_dir))
    for key in ("psnr", "psnr_y", "psnr_green", "ssim", "ssim_rgb"):
        assert m[f"{key}_fov"] == pytest.approx(m[key], abs=1e-4), key  # pyiqa works in float32

    def to_t(a):
        return torch.from_numpy(a.astype(np.float32).transpose(2, 0, 1) / 255.0)[None]

    # pyiqa builds its Gaussian window in float32; ours is exact float64 and separable: the values
    # agree to float32 precision, and to 1e-12 when pyiqa is given the same float64 window
    assert m["ssim"] == pytest.approx(float(pyiqa.create_metric("ssim", device="cpu")(to_t(noisy), to_t(crop))),
                                      abs=2e-6)
    assert m["ssim_rgb"] == pytest.approx(float(pyiqa.create_metric("ssimc", device="cpu")(to_t(noisy), to_t(crop))),
                                          abs=2e-6)
    from pyiqa.archs.func_util import preprocess_rgb
    from pyiqa.archs.ssim_arch import ssim

    from medrestore.evaluation.metrics import _gaussian_1d

    g = _gaussian_1d()
    for key, luma, c in (("ssim", True, 1), ("ssim_rgb", False, 3)):
        a, b = (preprocess_rgb(to_t(v), luma, 255, "yiq").to(torch.float64) for v in (noisy, crop))
        win = torch.outer(g, g).expand(c, 1, 11, 11).contiguous()
        assert m[key] == pytest.approx(float(ssim(a, b, win=win, data_range=255)), abs=1e-12), key


def test_every_fov_metric_ignores_damage_outside_the_mask(chase_image, assets_dir):
    crop = chase_image[300:428, 400:528]
    noisy, _ = corrupt(crop, {"kind": "gaussian", "sigma": 15}, [2])
    damaged = noisy.copy()
    damaged[:, :48] = 0
    fov = np.zeros(crop.shape[:2], bool)
    fov[:, 64:] = True  # SSIM windows centred here (11 px wide) never reach the damaged columns
    a = full_reference(noisy, crop, fov, str(assets_dir))
    b = full_reference(damaged, crop, fov, str(assets_dir))
    for key in ("psnr_fov", "psnr_y_fov", "psnr_green_fov", "ssim_fov", "ssim_rgb_fov"):
        assert b[key] == pytest.approx(a[key], rel=1e-9), key
    for key in ("psnr", "psnr_y", "psnr_green", "ssim", "ssim_rgb"):
        assert b[key] < a[key] - 0.01, key


# ----------------------------------------------------------------------------- the metric registry
def test_the_registry_names_every_metric_the_evaluation_computes(retina, assets_dir):
    crop = retina[500:628, 500:628]
    noisy, _ = corrupt(crop, {"kind": "gaussian", "sigma": 25}, [0])
    assert set(all_metrics(noisy, crop, None, str(assets_dir))) == set(FULL_REFERENCE + NO_REFERENCE)
    assert set(all_metrics(crop, None, None, str(assets_dir))) == set(NO_REFERENCE)
    from medrestore.vessels import vessel_scores

    ref = np.zeros((64, 64), bool)
    ref[30:33, :] = True
    assert set(VESSEL_KEYS) <= set(vessel_scores(ref.astype(float), ref, ref))  # the ref_* / manual_* columns
    assert set(COLUMNS) == set(METRICS) and len(COLUMNS) == len(set(COLUMNS))


def test_per_image_columns_and_paired_tests_keep_their_order():
    # per_image.csv's columns and summary.json's paired tests: outputs, whose order must not move
    assert COLUMNS == (
        "psnr",
        "psnr_y",
        "psnr_green",
        "ssim",
        "ssim_rgb",
        "psnr_fov",
        "psnr_fov_e3",
        "psnr_y_fov",
        "psnr_green_fov",
        "ssim_fov",
        "ssim_rgb_fov",
        "niqe",
        "brisque",
        "entropy",
        *(
            f"{p}_{k}"
            for p in ("ref", "manual", "indep")
            for k in ("auc", "dice", "thin_recall", "thin_recall_above_chance", "invented_rate")
        ),
    )
    assert PAIRED == ("psnr", "psnr_fov", "psnr_green_fov", "ssim", "ssim_fov", "niqe", "brisque",
                      *(f"{p}_{k}" for p in ("ref", "manual") for k in ("auc", "dice", "thin_recall", "invented_rate")))


def test_every_entry_is_well_formed_and_vessel_columns_follow_their_metric():
    assert len({m.name for m in REGISTRY}) == len(REGISTRY)
    for m in REGISTRY:
        assert m.reference in (FULL, NO, VESSEL) and m.digits in (2, 3), m
        assert not m.fov or m.reference == FULL, m
        assert m.reference != VESSEL or m.header, f"{m.name}: a vessel metric needs a header"
    for prefix, words in VESSEL_REFERENCES:
        for m in (m for m in REGISTRY if m.reference == VESSEL):
            col = metric(f"{prefix}_{m.name}")
            assert (col.lower_is_better, col.digits, col.table) == (m.lower_is_better, m.digits, m.table)
            # independent scores: compared in the vessel-aware section
            assert col.paired == (m.paired and prefix != "indep")
            assert header(col.name) == f"{m.header} ({words})"
    assert header("psnr_fov") == "psnr_fov" and header("ref_auc") == "vessel AUC (vs clean)" and digits("ssim_fov") == 3
    with pytest.raises(KeyError, match="not in medrestore.evaluation.metrics.REGISTRY"):
        metric("psnr_typo")


def test_lower_is_better_is_one_set_and_says_which_way_quality_goes(retina, assets_dir):
    assert LOWER_IS_BETTER == {n for n, m in METRICS.items() if m.lower_is_better}
    assert LOWER_IS_BETTER == {"niqe", "brisque", "ref_invented_rate", "manual_invented_rate", "indep_invented_rate"}
    crop = retina[400:656, 400:656]
    mild, strong = (corrupt(crop, {"kind": "gaussian", "sigma": s}, [0])[0] for s in (5, 40))
    a, b = all_metrics(mild, crop, None, str(assets_dir)), all_metrics(strong, crop, None, str(assets_dir))
    for name in FULL_REFERENCE + ("niqe", "brisque"):  # entropy rises with noise: it says nothing of quality
        better = a[name] < b[name] if name in LOWER_IS_BETTER else a[name] > b[name]
        assert better, f"{name}: less noise should score better ({a[name]:.3f} vs {b[name]:.3f})"



def test_psnr_inside_the_fov_eroded_by_3_px_ignores_noise_on_the_fov_rim(chase_dir, assets_dir):
    """A real CHASE_DB1 image and its detected FOV: noise only on the FOV's outer 3 px band leaves the
    eroded FOV's pixels identical (the PSNR of identical pixels, as psnr_fov gives it), while
    psnr_fov sees the noise."""
    from scipy.ndimage import distance_transform_edt

    from medrestore.data.fov import detect_fov
    from medrestore.evaluation.metrics import FOV_EROSION_PX, eroded_fov

    full = read_image(chase_dir / "Image_12R.jpg")
    full_fov = detect_fov(full)
    cy = full.shape[0] // 2
    left = int(np.argmax(full_fov[cy]))  # the FOV's left rim on the middle row
    image = full[cy - 64 : cy + 64, left - 24 : left + 104]  # a window across the rim (the whole image: 10 s)
    fov = full_fov[cy - 64 : cy + 64, left - 24 : left + 104]
    inner = eroded_fov(fov)
    # the eroded FOV: the pixels more than 3 px from any pixel outside the FOV (or the window)
    dist = distance_transform_edt(np.pad(fov, 1))[1:-1, 1:-1]
    assert FOV_EROSION_PX == 3 and np.array_equal(inner, dist > 3)
    band = fov & ~inner
    assert band[:, 24:28].sum() >= 128 and inner.sum() > 0.8 * fov.sum()  # the rim's band is in it
    noisy = image.astype(np.int16)
    noisy[band] += np.random.default_rng(0).normal(0.0, 20.0, (int(band.sum()), 3)).round().astype(np.int16)
    noisy = np.clip(noisy, 0, 255).astype(np.uint8)
    assert (noisy[band] != image[band]).any() and np.array_equal(noisy[~band], image[~band])
    m = full_reference(noisy, image, fov, str(assets_dir))
    same = full_reference(image, image, fov, str(assets_dir))
    assert m["psnr_fov_e3"] == same["psnr_fov"] == same["psnr_fov_e3"]  # identical pixels: psnr_fov's rule
    assert np.isfinite(m["psnr_fov"]) and m["psnr_fov_e3"] > m["psnr_fov"]
    # noise everywhere inside the FOV: both finite, and psnr_fov_e3 is psnr_fov's rule on the eroded pixels
    rough = np.clip(image.astype(np.int16) + np.random.default_rng(1).integers(-6, 7, image.shape), 0,
                    255).astype(np.uint8)
    r = full_reference(rough, image, fov, str(assets_dir))
    mse = np.mean((rough[inner].astype(np.float64) - image[inner]) ** 2)
    assert r["psnr_fov_e3"] == pytest.approx(10 * np.log10(255.0**2 / mse), rel=1e-12)
