"""medrestore.vessels.scoring: vessel scores on CHASE_DB1 (real images, two observers' manual masks)
and on drawn masks whose answer is known.

Measured band (all 20 CHASE_DB1 images, first observer as reference; see the docstring of
``medrestore.vessels``): second observer vs first, Dice 0.741-0.818 at full resolution.
"""

from __future__ import annotations

import numpy as np
import pytest

from medrestore import vessels as V
from medrestore.data.fov import detect_fov
from vessels_data import one_torch_thread, raw  # noqa: F401  (one_torch_thread: autouse fixture)


def test_manual_mask_scored_against_itself_is_perfect(chase_dir):
    image, first, _ = raw(chase_dir, "Image_01L")
    fov = detect_fov(image)
    s = V.vessel_scores(first.astype(np.float32), first, first, fov)
    assert s["auc"] == 1.0 and s["dice"] == 1.0 and s["precision"] == 1.0 and s["recall"] == 1.0
    assert s["thin_recall"] == 1.0 and s["invented_rate"] == 0.0
    assert s["thin_pixels"] > 1000  # the full-resolution manual mask does hold 1-2 px vessels


@pytest.mark.parametrize("stem", ["Image_01L", "Image_05R", "Image_09L"])
def test_second_observer_against_first_gives_dice_in_measured_band(chase_dir, stem):
    image, first, second = raw(chase_dir, stem)
    s = V.vessel_scores(None, second, first, detect_fov(image))
    assert 0.72 <= s["dice"] <= 0.85, s
    # Two careful observers: few vessels "invented" by one relative to the other; thin vessels
    # are where they disagree most, yet far above what chance placement would give.
    assert s["invented_rate"] < 0.1, s
    assert s["thin_recall"] > 0.5 and s["thin_recall_above_chance"] > 0.4, s


def test_scores_count_only_pixels_inside_the_fov():
    ref = np.zeros((60, 60), bool)
    ref[30, 5:55] = True
    fov = np.zeros_like(ref)
    fov[:, :40] = True
    det = ref.copy()
    det[5:15, 45:55] = True  # a blob outside the FOV: not counted
    ref_outside = ref.copy()
    ref_outside[50, 45:58] = True  # a reference vessel outside the FOV: not missed
    s = V.vessel_scores(det.astype(float), det, ref_outside, fov)
    assert s["dice"] == 1.0 and s["invented_rate"] == 0.0 and s["thin_recall"] == 1.0 and s["auc"] == 1.0
    assert s["reference_pixels"] == 35 and s["fov_pixels"] == fov.sum()


def test_thin_vessels_are_the_one_and_two_pixel_wide_ones():
    for width, thin_share in [(1, 1.0), (2, 1.0), (3, 0.0), (5, 0.0)]:
        horizontal = np.zeros((80, 80), bool)
        horizontal[40 : 40 + width, 10:70] = True
        diagonal = np.zeros((80, 80), bool)
        for k in range(width):
            idx = np.arange(10, 70)
            diagonal[idx, idx + k] = True
        for mask in (horizontal, diagonal):
            share = V.thin_vessel_mask(mask).sum() / mask.sum()
            assert abs(share - thin_share) <= 0.05, (width, share)  # a 3 px bar's corner spurs may count


def test_thin_recall_tolerates_one_pixel_shift_and_invented_starts_beyond_two():
    ref = np.zeros((40, 60), bool)
    ref[20, 5:55] = True
    for shift, recall in [(0, 1.0), (1, 1.0), (2, 0.0)]:
        det = np.roll(ref, shift, axis=0)
        assert V.vessel_scores(None, det, ref)["thin_recall"] == recall, shift
    for shift, invented in [(2, 0.0), (3, 1.0)]:
        det = np.roll(ref, shift, axis=0)
        assert V.vessel_scores(None, det, ref)["invented_rate"] == invented, shift
    empty = V.vessel_scores(None, np.zeros_like(ref), ref)
    assert empty["dice"] == 0.0 and empty["invented_rate"] == 0.0 and empty["thin_recall"] == 0.0
    assert np.isnan(V.vessel_scores(None, ref, np.zeros_like(ref))["auc"])
