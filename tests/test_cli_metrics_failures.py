"""`medrestore metrics` on the inputs of issue 15: grey against colour, identical images in JSON,
an all-black image, a 16x16 image, image and reference of different sizes (real CHASE_DB1 crops)."""

import json

import numpy as np
import pytest
from PIL import Image

from medrestore.cli import main
from medrestore.evaluation.metrics import all_metrics

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _strict_json(text: str):
    """json.loads that refuses Infinity and NaN, as every non-Python JSON parser does."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def crop(chase_image):
    return chase_image[300:428, 300:428]  # 128 x 128, inside the field of view


def test_grey_image_against_colour_reference_is_refused_and_measured_as_grey_on_request(
    tmp_path, crop, assets_dir, capsys
):
    Image.fromarray(crop).convert("L").save(tmp_path / "grey.png")
    Image.fromarray(crop).save(tmp_path / "rgb_reference.png")
    args = ["metrics", str(tmp_path / "grey.png"), str(tmp_path / "rgb_reference.png"), "--assets", str(assets_dir),
            "--json"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "grey.png is grey" in err and "rgb_reference.png is in colour" in err and "--grey" in err
    assert main([*args, "--grey"]) == 0
    scores = _strict_json(capsys.readouterr().out)
    # Both as grey levels: the grey image is the reference's own luma, every measure agrees it is identical.
    # identical: infinite
    assert scores["ssim"] == pytest.approx(1.0) and scores["ssim_rgb"] == pytest.approx(1.0) and scores["psnr"] is None
    # The other way round too.
    assert main(["metrics", str(tmp_path / "rgb_reference.png"), str(tmp_path / "grey.png"), "--assets",
                 str(assets_dir)]) == 2


def test_json_of_identical_images_is_valid_json_with_null_for_infinity(tmp_path, crop, assets_dir, capsys):
    Image.fromarray(crop).save(tmp_path / "a.png")
    assert main(["metrics", str(tmp_path / "a.png"), str(tmp_path / "a.png"), "--assets", str(assets_dir),
                 "--json"]) == 0
    out = capsys.readouterr()
    scores = _strict_json(out.out)
    assert scores["psnr_fov"] is None and scores["psnr_green"] is None
    assert "psnr_fov is null" in out.err and "infinite" in out.err
    assert scores["ssim"] == pytest.approx(1.0)


def test_scores_are_those_of_the_library(tmp_path, crop, assets_dir, capsys):
    noisy = np.clip(crop.astype(int) + np.random.default_rng(0).normal(0, 20, crop.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(tmp_path / "noisy.png")
    Image.fromarray(crop).save(tmp_path / "clean.png")
    assert main(["metrics", str(tmp_path / "noisy.png"), str(tmp_path / "clean.png"), "--assets", str(assets_dir),
                 "--json"]) == 0
    assert _strict_json(capsys.readouterr().out) == pytest.approx(all_metrics(noisy, crop, None, str(assets_dir)))


def test_all_black_image_gives_not_defined_niqe_and_brisque_not_a_traceback(tmp_path, assets_dir, capsys):
    Image.fromarray(np.zeros((128, 128, 3), np.uint8)).save(tmp_path / "black.png")
    assert main(["metrics", str(tmp_path / "black.png"), "--assets", str(assets_dir), "--json"]) == 0
    out = capsys.readouterr()
    scores = _strict_json(out.out)
    assert scores["niqe"] is None and scores["brisque"] is None and scores["entropy"] == 0.0
    assert "niqe is null" in out.err and "constant" in out.err
    assert main(["metrics", str(tmp_path / "black.png"), "--assets", str(assets_dir)]) == 0
    assert "niqe           not defined" in capsys.readouterr().out


def test_small_image_measures_what_is_defined(tmp_path, crop, assets_dir, capsys):
    Image.fromarray(crop[:16, :16]).save(tmp_path / "s16.png")
    Image.fromarray(np.clip(crop[:16, :16].astype(int) + 5, 0, 255).astype(np.uint8)).save(tmp_path / "r16.png")
    assert main(["metrics", str(tmp_path / "s16.png"), str(tmp_path / "r16.png"), "--assets", str(assets_dir),
                 "--json"]) == 0
    out = capsys.readouterr()
    scores = _strict_json(out.out)
    assert scores["niqe"] is None and "96x96" in out.err
    assert 0 < scores["ssim"] <= 1 and 30 < scores["psnr"] < 40 and scores["entropy"] > 0
    Image.fromarray(crop[:8, :8]).save(tmp_path / "s8.png")
    assert main(["metrics", str(tmp_path / "s8.png"), "--assets", str(assets_dir)]) == 2
    assert "8x8 pixels" in capsys.readouterr().err


def test_image_and_reference_of_different_sizes_is_a_clear_error(tmp_path, crop, assets_dir, capsys):
    Image.fromarray(crop).save(tmp_path / "big.png")
    Image.fromarray(crop[:100, :96]).save(tmp_path / "small.png")
    assert main(["metrics", str(tmp_path / "big.png"), str(tmp_path / "small.png"), "--assets", str(assets_dir)]) == 2
    err = capsys.readouterr().err
    assert "128x128" in err and "96x100" in err and "Fix:" in err
    Image.fromarray(np.full((100, 96), 255, np.uint8)).save(tmp_path / "mask.png")
    assert main(["metrics", str(tmp_path / "big.png"), str(tmp_path / "big.png"), "--fov", str(tmp_path / "mask.png"),
                 "--assets", str(assets_dir)]) == 2
    assert "FOV mask" in capsys.readouterr().err


def test_whole_image_and_fov_psnr_follow_one_rule_on_near_identical_images(tmp_path, chase_image, assets_dir, capsys):
    image = chase_image[200:456, 200:456].copy()
    other = image.copy()
    other[100, 100, 1] += 1 if other[100, 100, 1] < 255 else -1  # one LSB of one pixel
    Image.fromarray(image).save(tmp_path / "a.png")
    Image.fromarray(other).save(tmp_path / "b.png")
    Image.fromarray(np.full(image.shape[:2], 255, np.uint8)).save(tmp_path / "fov.png")
    assert main(["metrics", str(tmp_path / "b.png"), str(tmp_path / "a.png"), "--fov", str(tmp_path / "fov.png"),
                 "--assets", str(assets_dir), "--json"]) == 0
    scores = _strict_json(capsys.readouterr().out)
    expected = 10 * np.log10(255.0**2 * image.size)  # MSE: one squared LSB over every sample
    assert scores["psnr"] == pytest.approx(expected) and scores["psnr_fov"] == pytest.approx(expected)
    assert scores["psnr_y"] == pytest.approx(scores["psnr_y_fov"])
    # identical images: every PSNR infinite (null in the JSON, the reason on stderr), none capped at 80 dB
    assert main(["metrics", str(tmp_path / "a.png"), str(tmp_path / "a.png"), "--assets", str(assets_dir),
                 "--json"]) == 0
    captured = capsys.readouterr()
    scores = _strict_json(captured.out)
    for key in ("psnr", "psnr_y", "psnr_green", "psnr_fov", "psnr_y_fov", "psnr_green_fov"):
        assert scores[key] is None and f"note: {key} is null in the JSON: infinite" in captured.err


def test_missing_assets_offline_are_a_clear_error_not_a_url_error(tmp_path, crop, monkeypatch, capsys):
    import socket

    from medrestore.evaluation.metrics import _metric

    Image.fromarray(crop).save(tmp_path / "a.png")
    assert main(["metrics", str(tmp_path / "a.png"), "--assets", "/nonexistent", "--json"]) == 2
    err = capsys.readouterr().err
    assert "--assets /nonexistent: no such folder" in err and "Fix:" in err
    # outside the repository, offline, pyiqa's cache empty: the parameter files are nowhere
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("MEDRESTORE_PYIQA_ASSETS", raising=False)
    monkeypatch.chdir(tmp_path)

    def offline(*_a, **_k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket.socket, "connect", offline)
    monkeypatch.setattr(socket, "getaddrinfo", offline)
    _metric.cache_clear()
    try:
        assert main(["metrics", "a.png", "--json"]) == 2
    finally:
        _metric.cache_clear()
    err = capsys.readouterr().err
    assert "niqe_modelparameters.mat" in err and "--assets" in err and "Fix:" in err
