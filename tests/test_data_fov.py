import numpy as np
import pytest

from medrestore.data.fov import detect_fov, fov_bbox, prepare_arrays
from medrestore.data.sources import load_mask


def test_fov_of_sample_retina_is_a_central_disc(retina):
    fov = detect_fov(retina)
    h, w = fov.shape
    assert fov[h // 2, w // 2] and not fov[0, 0] and not fov[-1, -1]
    t, b, l, r = fov_bbox(fov)
    # The disc touches (almost) the frame on all sides of this photograph.
    assert b - t > 0.9 * h and r - l > 0.9 * w
    area = fov.sum() / ((b - t) * (r - l))
    assert area == pytest.approx(np.pi / 4, abs=0.05)


def test_fov_of_chase_contains_the_manual_vessels(chase_dir):
    from medrestore.core.io import read_image

    for stem in ("Image_01L", "Image_05R", "Image_10L"):
        image = read_image(chase_dir / f"{stem}.jpg")
        vessels = load_mask(chase_dir / f"{stem}_1stHO.png")
        fov = detect_fov(image)
        assert 0.5 < fov.mean() < 0.8
        # Every annotated vessel pixel lies inside the detected FOV (allow a thin rim).
        assert (vessels & ~fov).sum() / vessels.sum() < 0.005


def test_prepare_crops_border_and_resizes_masks_with_image(chase_dir, chase_image):
    vessels = load_mask(chase_dir / "Image_01L_1stHO.png")
    image, fov, ves = prepare_arrays(chase_image, vessels, size=256)
    assert image.shape == (256, 256, 3) and fov.shape == (256, 256) and ves.shape == (256, 256)
    # After the border crop the FOV disc fills most of the square.
    assert fov.mean() > 0.7
    assert 0.03 < ves.mean() < 0.2
    assert (ves & ~fov).sum() / ves.sum() < 0.01
