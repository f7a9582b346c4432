"""Photometric augmentation of the training targets (corrupt.tasks.<task>.photometric) and the
recolouring of test images to other cameras' channel statistics, on CHASE_DB1."""

import json

import numpy as np
import pytest

from conftest import prepare_chase
from medrestore.core.io import InputError, read_image, read_mask
from medrestore.data.corrupt import corrupt_task, read_params
from medrestore.data.patches import patchify
from medrestore.data.photometric import (
    CHANNELS,
    PROFILES,
    augment_patch,
    channel_means,
    check_photometric,
    recolour,
)
from medrestore.degradations import corrupt
from medrestore.pipeline.train import train_targets

PHOTO = {"p": 1.0, "mean_range": {"red": [110, 210], "green": [50, 120], "blue": [5, 60]}, "gamma_range": [0.8, 1.25]}
SPEC = {"train": {"kind": "gaussian", "sigma": 25}, "test": {"s25": {"kind": "gaussian", "sigma": 25}},
        "photometric": PHOTO}
PATCH_ARGS = {"patch_size": 32, "stride": 32, "min_fov_fraction": 0.8, "val_fraction": 0.25, "test_fraction": 0.25,
              "region_grid": 2}


@pytest.fixture(scope="module")
def chase(tmp_path_factory, chase_dir):
    root = tmp_path_factory.mktemp("chase_photo")
    prepared = prepare_chase(root, chase_dir, 160)
    patchify(prepared, root / "prepared", root / "patches", seed=7, **PATCH_ARGS)
    corrupt_task(root / "patches", root / "corrupt", task="denoise-g25", spec=SPEC, seed=11,
                 prepared_dir=root / "prepared")
    return root


def test_augmentation_covers_the_target_ranges_and_replays_from_its_seed(chase):
    clean = np.load(chase / "patches" / "train.npy")
    spec = check_photometric("t", PHOTO)
    before = np.stack([channel_means(p) for p in clean])
    assert before[:, 2].max() < 40  # CHASE_DB1's blue is nearly black
    out = [augment_patch(p, spec, [11, 1, 0, i, 5]) for i, p in enumerate(clean)]
    means = np.stack([channel_means(a) for a, _ in out])
    for k, c in enumerate(CHANNELS):
        lo, hi = PHOTO["mean_range"][c]
        assert means[:, k].min() < lo + 0.25 * (hi - lo) and means[:, k].max() > hi - 0.25 * (hi - lo), c
        assert np.all(means[:, k] > lo - 6) and np.all(means[:, k] < hi + 6), c
    again = augment_patch(clean[3], spec, [11, 1, 0, 3, 5])
    assert np.array_equal(again[0], out[3][0]) and again[1] == out[3][1]
    assert not np.array_equal(augment_patch(clean[3], spec, [11, 1, 0, 4, 5])[0], out[3][0])
    skipped = augment_patch(clean[0], {**spec, "p": 0.0}, [1])
    assert skipped[1] == {"applied": False} and np.array_equal(skipped[0], clean[0])


def test_degraded_rows_are_the_corruption_of_the_augmented_targets_and_the_trainer_reads_them(chase):
    out = chase / "corrupt"
    aug, noisy, plain = (
        np.load(out / "train_clean.npy"),
        np.load(out / "train.npy"),
        np.load(chase / "patches" / "train.npy"),
    )
    assert aug.shape == plain.shape and not np.array_equal(aug, plain)
    records = read_params(out / "train_params.jsonl")
    fov_free = 0
    for i, rec in enumerate(records):
        assert rec["photometric"]["applied"]
        replay, _ = corrupt(aug[i], SPEC["train"], rec["seed_words"], None)
        fov_free += np.array_equal(replay, noisy[i])
    assert fov_free == len(records)  # gaussian noise ignores the FOV: each row replays exactly
    assert not (out / "val_clean.npy").exists()
    val = np.load(out / "val.npy")
    assert (
        "photometric" not in read_params(out / "val_params.jsonl")[0]
        and val.shape == np.load(chase / "patches" / "val.npy").shape
    )
    assert json.loads((out / "corruption.json").read_text())["splits"]["train"]["clean"] == "train_clean.npy"
    assert np.array_equal(train_targets(chase / "patches", out), aug)
    assert np.array_equal(train_targets(chase / "patches", chase / "nowhere"), plain)


def test_corrupt_with_photometric_is_byte_identical_on_rerun(chase, tmp_path):
    corrupt_task(chase / "patches", tmp_path, task="denoise-g25", spec=SPEC, seed=11, prepared_dir=chase / "prepared")
    for name in ("train_clean.npy", "train.npy", "train_params.jsonl", "corruption.json"):
        assert (tmp_path / name).read_bytes() == (chase / "corrupt" / name).read_bytes(), name


def test_bad_photometric_specs_are_refused_naming_the_entry():
    with pytest.raises(InputError, match=r"corrupt.tasks.t.photometric.mean_range.*Fix"):
        check_photometric("t", {"mean_range": {"red": [1, 2], "green": [3, 4]}})
    with pytest.raises(InputError, match=r"unknown keys.*Fix"):
        check_photometric("t", {**PHOTO, "hue": 3})
    with pytest.raises(InputError, match=r"gamma_range.*Fix"):
        check_photometric("t", {**PHOTO, "gamma_range": [0, 1]})


def test_recolour_hits_the_profile_inside_the_fov_and_is_deterministic(chase):
    manifest = json.loads((chase / "prepared" / "manifest.json").read_text())
    entry = manifest["images"][0]
    image, fov = read_image(chase / "prepared" / entry["image"]), read_mask(chase / "prepared" / entry["fov"])
    for name, profile in PROFILES.items():
        out, params = recolour(image, fov, profile, gamma=(1.0, 0.9, 0.8))
        got = out[fov].astype(np.float64).mean(axis=0)
        assert np.allclose(got, [profile[c] for c in CHANNELS], atol=1.5), (name, got)
        assert not out[~fov].any()
        again, params2 = recolour(image, fov, profile, gamma=(1.0, 0.9, 0.8))
        assert np.array_equal(out, again) and params == params2


def test_super_resolution_targets_are_augmented_at_full_size_and_image_level_tasks_refuse(chase, tmp_path):
    chain = {"kind": "chain", "steps": [{"kind": "downscale", "scale": 4}, {"kind": "gaussian", "sigma": 25}]}
    spec = {"train": chain, "test": {"x4-s25": chain}, "photometric": PHOTO}
    corrupt_task(chase / "patches", tmp_path / "sr", task="denoise-sr", spec=spec, seed=11,
                 prepared_dir=chase / "prepared")
    aug, low = np.load(tmp_path / "sr" / "train_clean.npy"), np.load(tmp_path / "sr" / "train.npy")
    assert aug.shape[1] == 32 and low.shape[1] == 8 and len(aug) == len(low)
    rec = read_params(tmp_path / "sr" / "train_params.jsonl")[5]
    assert np.array_equal(corrupt(aug[5], chain, rec["seed_words"], None)[0], low[5])
    with pytest.raises(InputError, match=r"corrupt.tasks.e.photometric: only patch-level paired tasks.*Fix"):
        corrupt_task(chase / "patches", tmp_path / "e", task="e", spec={**SPEC, "level": "image"}, seed=11,
                     prepared_dir=chase / "prepared")


def _blue_noise(image: np.ndarray, fov: np.ndarray) -> float:
    """Noise sigma of the blue channel (skimage's wavelet estimate) on the FOV's central square."""
    from skimage.restoration import estimate_sigma

    ys, xs = np.nonzero(fov)
    cy, cx, r = (ys.min() + ys.max()) // 2, (xs.min() + xs.max()) // 2, (ys.max() - ys.min()) // 4
    return float(estimate_sigma(image[cy - r:cy + r, cx - r:cx + r, 2].astype(np.float64)))


def test_a_brighter_blue_is_borrowed_from_green_not_blown_up_from_chase_noise(chase_dir, tmp_path):
    """CHASE_DB1's blue (mean ~10) gained alone to another camera's 45-60 turns its sensor noise and JPEG
    blocks into "clean" texture; the transform gains blue at most OWN_GAIN_MAX and takes the rest from
    green, so the recoloured blue stays about as clean as the source's, with its vessels."""
    from medrestore.data.photometric import OWN_GAIN_MAX, apply_colour

    prepared = prepare_chase(tmp_path, chase_dir, 512, keep=lambda recs: recs[:2])
    for entry in prepared["images"]:
        image, fov = read_image(tmp_path / "prepared" / entry["image"]), read_mask(tmp_path / "prepared" / entry["fov"])
        source = _blue_noise(image, fov)
        out, params = recolour(image, fov, PROFILES["bright"])
        assert abs(out[fov][:, 2].mean() - PROFILES["bright"]["blue"]) < 1.5
        assert params["gain"][2] <= OWN_GAIN_MAX + 1e-9 and params["leak"][2] > 0 and params["leak"][1] == 0
        assert _blue_noise(out, fov) < 3 * source, (entry["id"], source, _blue_noise(out, fov))
        # the old transform, blue gained alone to the same mean: several times the source's noise
        alone = apply_colour(image, [params["gain"][0], params["gain"][1], PROFILES["bright"]["blue"] / max(
            image[fov][:, 2].mean(), 1e-3)], (1.0, 1.0, 1.0))
        assert _blue_noise(alone, fov) > 4 * source
        # vessels survive in the borrowed blue: it correlates with green inside the FOV
        assert np.corrcoef(out[fov][:, 1], out[fov][:, 2])[0, 1] > 0.8
