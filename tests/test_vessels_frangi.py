"""medrestore.vessels.frangi: the classical segmenter on CHASE_DB1 (real images, manual masks).

Measured bands and floors (all 20 CHASE_DB1 images, 512 px ``prepare_arrays``, first observer as
reference; see the docstring of ``medrestore.vessels``):
- Frangi: AUC 0.906-0.940, Dice 0.550-0.712 (top-12 % rule);
- Gaussian blur sigma 1.5: thin-vessel recall drops by 0.097-0.35 while AUC moves by <= 0.019;
- Gaussian noise sigma 25: invented-vessel rate rises by 0.29-0.47.
"""

from __future__ import annotations

import numpy as np
import pytest

from medrestore import vessels as V
from vessels_data import frangi_maps, one_torch_thread, prepared  # noqa: F401  (one_torch_thread: autouse fixture)


@pytest.mark.parametrize("stem", ["Image_01L", "Image_05R", "Image_09L"])
def test_frangi_on_clean_chase_reaches_measured_auc_and_dice_floors(chase_dir, stem):
    _, fov, v1, _ = prepared(chase_dir, stem, 512)
    score, binary = frangi_maps(chase_dir, stem, 512)
    assert score.dtype == np.float32 and score.min() >= 0.0 and score.max() <= 1.0
    assert not score[~fov].any() and not binary[~fov].any()
    assert abs(binary[fov].mean() - V.TOP_FRACTION) < 0.005  # the top-12 % rule
    s = V.vessel_scores(score, binary, v1, fov)
    assert s["auc"] >= 0.90 and s["dice"] >= 0.52, s


def test_scale_normalised_frangi_beats_plain_multiscale_skimage_call(chase_dir):
    from skimage.filters import frangi

    img, fov, v1, _ = prepared(chase_dir, "Image_01L", 512)
    score, binary = frangi_maps(chase_dir, "Image_01L", 512)
    g = V.fill_outside_fov(V.green_channel(img), fov)
    plain = frangi(g, sigmas=V.frangi_sigmas(fov), black_ridges=True)
    auc_ours = V.vessel_scores(score, binary, v1, fov)["auc"]
    auc_plain = V.vessel_scores(plain, binary, v1, fov)["auc"]
    assert auc_ours > auc_plain + 0.03, (auc_ours, auc_plain)


@pytest.mark.parametrize("stem", ["Image_01L", "Image_05R"])
def test_gaussian_blur_loses_thin_vessels_while_auc_barely_moves(chase_dir, stem):
    _, fov, v1, _ = prepared(chase_dir, stem, 512)
    clean_score, clean_bin = frangi_maps(chase_dir, stem, 512)
    blur_score, blur_bin = frangi_maps(chase_dir, stem, 512, "blur")
    clean = V.vessel_scores(clean_score, clean_bin, v1, fov)
    blurred = V.vessel_scores(blur_score, blur_bin, v1, fov)
    assert blurred["thin_recall"] < clean["thin_recall"] - 0.07, (clean, blurred)
    assert blurred["thin_recall_above_chance"] < clean["thin_recall_above_chance"] - 0.07
    assert abs(blurred["auc"] - clean["auc"]) < 0.03  # the pixel-count-dominated score hides it
    # Without a manual mask (the reference is the clean image's segmentation) the loss shows too.
    vs_clean = V.vessel_scores(blur_score, blur_bin, clean_bin, fov)
    assert vs_clean["thin_recall"] < 0.75 and vs_clean["invented_rate"] < 0.05, vs_clean


@pytest.mark.parametrize("stem", ["Image_01L", "Image_05R"])
def test_sigma25_noise_makes_frangi_invent_vessels(chase_dir, stem):
    _, fov, v1, _ = prepared(chase_dir, stem, 512)
    clean = V.vessel_scores(*frangi_maps(chase_dir, stem, 512), v1, fov)
    noisy = V.vessel_scores(*frangi_maps(chase_dir, stem, 512, "noise"), v1, fov)
    assert noisy["invented_rate"] > clean["invented_rate"] + 0.2, (clean, noisy)
    # Scattered detections touch thin vessels by chance: the chance level rises with them.
    assert noisy["thin_recall_chance"] > clean["thin_recall_chance"] + 0.1
    vs_clean = V.vessel_scores(*frangi_maps(chase_dir, stem, 512, "noise"), frangi_maps(chase_dir, stem, 512)[1], fov)
    assert vs_clean["invented_rate"] > 0.4, vs_clean
