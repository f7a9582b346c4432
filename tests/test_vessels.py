"""Vessel segmentation and vessel scores, on CHASE_DB1 (real images, two observers' manual masks).

Measured bands and floors (all 20 CHASE_DB1 images, 512 px ``prepare_arrays``, first observer as
reference; see the docstring of ``medrestore.vessels``):
- second observer vs first: Dice 0.741-0.818 at full resolution, 0.752-0.828 at 512 px;
- Frangi: AUC 0.906-0.940, Dice 0.550-0.712 (top-12 % rule);
- Gaussian blur sigma 1.5: thin-vessel recall drops by 0.097-0.35 while AUC moves by <= 0.019;
- Gaussian noise sigma 25: invented-vessel rate rises by 0.29-0.47.
U-Net after the 300-step training below (one CPU thread): held-out AUC 0.968 (Image_05L) and
0.945 (Image_09R) against Frangi's 0.943 and 0.925; Dice 0.756/0.663 against 0.706/0.545.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from medrestore import vessels as V
from medrestore.data.fov import detect_fov, prepare_arrays
from medrestore.data.sources import load_mask
from medrestore.degradations import corrupt
from medrestore.io import InputError, read_image
from medrestore.models.unet import UNet


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # The test machine's 2 cores are shared with a training run: 2 OpenMP threads competing for
    # busy cores were measured 20x slower per training step than 1 thread.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@functools.cache
def _raw(chase_dir, stem):
    image = read_image(chase_dir / f"{stem}.jpg")
    return image, load_mask(chase_dir / f"{stem}_1stHO.png"), load_mask(chase_dir / f"{stem}_2ndHO.png")


@functools.cache
def _prepared(chase_dir, stem, size):
    """(image, fov, first observer, second observer) at ``size`` px."""
    image, first, second = _raw(chase_dir, stem)
    img, fov, v1 = prepare_arrays(image, first, size=size)
    _, _, v2 = prepare_arrays(image, second, size=size)
    return img, fov, v1, v2


@functools.cache
def _frangi(chase_dir, stem, size, variant="clean"):
    img, fov, _, _ = _prepared(chase_dir, stem, size)
    if variant == "blur":
        img = np.stack([ndi.gaussian_filter(img[..., c].astype(np.float64), 1.5) for c in range(3)], -1).round().clip(0, 255).astype(np.uint8)
    elif variant == "noise":
        img, _ = corrupt(img, {"kind": "gaussian", "sigma": 25}, [7])
    return V.segment_frangi(img, fov)


# ----------------------------------------------------------------------------- scores
def test_manual_mask_scored_against_itself_is_perfect(chase_dir):
    image, first, _ = _raw(chase_dir, "Image_01L")
    fov = detect_fov(image)
    s = V.vessel_scores(first.astype(np.float32), first, first, fov)
    assert s["auc"] == 1.0 and s["dice"] == 1.0 and s["precision"] == 1.0 and s["recall"] == 1.0
    assert s["thin_recall"] == 1.0 and s["invented_rate"] == 0.0
    assert s["thin_pixels"] > 1000  # the full-resolution manual mask does hold 1-2 px vessels


@pytest.mark.parametrize("stem", ["Image_01L", "Image_05R", "Image_09L"])
def test_second_observer_against_first_gives_dice_in_measured_band(chase_dir, stem):
    image, first, second = _raw(chase_dir, stem)
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


# ----------------------------------------------------------------------------- Frangi
@pytest.mark.parametrize("stem", ["Image_01L", "Image_05R", "Image_09L"])
def test_frangi_on_clean_chase_reaches_measured_auc_and_dice_floors(chase_dir, stem):
    _, fov, v1, _ = _prepared(chase_dir, stem, 512)
    score, binary = _frangi(chase_dir, stem, 512)
    assert score.dtype == np.float32 and score.min() >= 0.0 and score.max() <= 1.0
    assert not score[~fov].any() and not binary[~fov].any()
    assert abs(binary[fov].mean() - V.TOP_FRACTION) < 0.005  # the top-12 % rule
    s = V.vessel_scores(score, binary, v1, fov)
    assert s["auc"] >= 0.90 and s["dice"] >= 0.52, s


def test_scale_normalised_frangi_beats_plain_multiscale_skimage_call(chase_dir):
    from skimage.filters import frangi

    img, fov, v1, _ = _prepared(chase_dir, "Image_01L", 512)
    score, binary = _frangi(chase_dir, "Image_01L", 512)
    g = V.fill_outside_fov(V.green_channel(img), fov)
    plain = frangi(g, sigmas=V.frangi_sigmas(fov), black_ridges=True)
    auc_ours = V.vessel_scores(score, binary, v1, fov)["auc"]
    auc_plain = V.vessel_scores(plain, binary, v1, fov)["auc"]
    assert auc_ours > auc_plain + 0.03, (auc_ours, auc_plain)


@pytest.mark.parametrize("stem", ["Image_01L", "Image_05R"])
def test_gaussian_blur_loses_thin_vessels_while_auc_barely_moves(chase_dir, stem):
    _, fov, v1, _ = _prepared(chase_dir, stem, 512)
    clean_score, clean_bin = _frangi(chase_dir, stem, 512)
    blur_score, blur_bin = _frangi(chase_dir, stem, 512, "blur")
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
    _, fov, v1, _ = _prepared(chase_dir, stem, 512)
    clean = V.vessel_scores(*_frangi(chase_dir, stem, 512), v1, fov)
    noisy = V.vessel_scores(*_frangi(chase_dir, stem, 512, "noise"), v1, fov)
    assert noisy["invented_rate"] > clean["invented_rate"] + 0.2, (clean, noisy)
    # Scattered detections touch thin vessels by chance: the chance level rises with them.
    assert noisy["thin_recall_chance"] > clean["thin_recall_chance"] + 0.1
    vs_clean = V.vessel_scores(*_frangi(chase_dir, stem, 512, "noise"), _frangi(chase_dir, stem, 512)[1], fov)
    assert vs_clean["invented_rate"] > 0.4, vs_clean


# ----------------------------------------------------------------------------- U-Net
def test_unet_takes_any_size_and_returns_one_logit_channel():
    torch.manual_seed(0)
    for depth, width, in_channels in [(3, 8, 3), (2, 4, 1)]:
        net = UNet(in_channels=in_channels, depth=depth, width=width).eval()
        for h, w in [(24, 24), (37, 41), (5, 7)]:
            with torch.no_grad():
                out = net(torch.rand(2, in_channels, h, w))
            assert out.shape == (2, 1, h, w)
    small, big = UNet(width=4), UNet(width=8)
    assert sum(p.numel() for p in big.parameters()) > 3 * sum(p.numel() for p in small.parameters())
    with pytest.raises(ValueError, match="depth"):
        UNet(depth=0)


def test_tiled_segmentation_equals_untiled(retina):
    torch.manual_seed(0)
    net = UNet(depth=3, width=4).eval()
    img = retina[500:756, 400:620]
    whole = V.segment(net, img, tile=4096, overlap=0)
    tiled = V.segment(net, img, tile=64, overlap=96)
    assert whole.shape == img.shape[:2] and 0.0 <= whole.min() and whole.max() <= 1.0
    assert np.abs(whole - tiled).max() < 1e-4
    seams = V.segment(net, img, tile=64, overlap=0)
    assert np.abs(whole - seams).max() > 1e-3  # the test can tell


def _small_training_set(chase_dir):
    data = [_prepared(chase_dir, s, 128) for s in ("Image_01L", "Image_02R")]
    return [d[0] for d in data], [d[2] for d in data], [d[1] for d in data]


def test_segmenter_training_is_deterministic(tmp_path, chase_dir):
    images, masks, fovs = _small_training_set(chase_dir)
    kw = {"steps": 6, "patch_size": 32, "batch_size": 4, "lr": 1e-2, "width": 4}
    for name, seed in [("a", 5), ("b", 5), ("c", 6)]:
        V.train_segmenter(images, masks, fovs, tmp_path / name, seed=seed, **kw)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["model.json", "model.safetensors"]
    for name in ("model.safetensors", "model.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "model.safetensors").read_bytes() != (tmp_path / "c" / "model.safetensors").read_bytes()


def test_segmenter_round_trips_and_bad_folders_raise_input_error(tmp_path, chase_dir):
    images, masks, fovs = _small_training_set(chase_dir)
    V.train_segmenter(images, masks, fovs, tmp_path / "seg", steps=2, patch_size=32, batch_size=2, width=4, in_channels=1)
    model, meta = V.load_segmenter(tmp_path / "seg" / "model.safetensors")
    assert meta["model"] == "unet" and meta["kwargs"]["in_channels"] == 1 and meta["train"]["steps"] == 2
    prob = V.segment(model, images[0], fovs[0])
    assert prob.shape == fovs[0].shape and not prob[~fovs[0]].any()
    with pytest.raises(InputError, match=r"missing.*Fix|needs model.json.*Fix"):
        V.load_segmenter(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "model.json").write_text(json.dumps({"model": "dncnn", "kwargs": {}}))
    (tmp_path / "other" / "model.safetensors").write_bytes((tmp_path / "seg" / "model.safetensors").read_bytes())
    with pytest.raises(InputError, match="not a vessel segmenter"):
        V.load_segmenter(tmp_path / "other")
    with pytest.raises(ValueError, match="smaller than patch_size"):
        V.train_segmenter(images, masks, fovs, tmp_path / "x", steps=1, patch_size=256)


def test_unet_trained_briefly_beats_frangi_on_held_out_chase_images(tmp_path, chase_dir):
    train = [_prepared(chase_dir, s, 256) for s in ("Image_01L", "Image_02R", "Image_03L", "Image_04R")]
    summary = V.train_segmenter(
        [t[0] for t in train], [t[2] for t in train], [t[1] for t in train], tmp_path / "unet",
        # 400 steps: at 300 the AUC on Image_09R was 0.928 on an AVX-512/AMX CPU (0.943 with 2 threads), below
        # the bar, while another machine passed; trained weights depend on the CPU (README).
        steps=400, patch_size=64, batch_size=8, lr=1e-2, width=8, seed=0,
    )
    assert summary["loss_last10"] < 0.6 * summary["loss_first10"]
    model, _ = V.load_segmenter(tmp_path / "unet")
    for stem in ("Image_05L", "Image_09R"):  # never seen in training
        img, fov, v1, _ = _prepared(chase_dir, stem, 256)
        unet = V.vessel_scores(*V.segment_unet(model, img, fov), v1, fov)
        frangi = V.vessel_scores(*V.segment_frangi(img, fov), v1, fov)
        assert unet["auc"] >= 0.93 and unet["auc"] > frangi["auc"] + 0.01, (stem, unet, frangi)
        assert unet["dice"] > frangi["dice"], (stem, unet, frangi)


# ----------------------------------------------------------------------------- the train_segmenter stage
def _prepared_dir(chase_dir, root, stems, size=128, masks=True):
    """A prepared folder as the prepare stage writes it (manifest + PNGs; two observers' masks)."""
    from medrestore.io import write_json_atomic, write_png_atomic

    entries = []
    for stem in stems:
        img, fov, v1, v2 = _prepared(chase_dir, stem, size)
        e = {"id": f"chase_db1/{stem}", "dataset": "chase_db1", "image": f"images/{stem}.png", "fov": f"fov/{stem}.png",
             "vessels": f"vessels/{stem}.png" if masks else None, "vessels_2nd": f"vessels_2nd/{stem}.png" if masks else None}
        write_png_atomic(root / e["image"], img)
        write_png_atomic(root / e["fov"], fov.astype(np.uint8) * 255)
        if masks:
            write_png_atomic(root / e["vessels"], v1.astype(np.uint8) * 255)
            write_png_atomic(root / e["vessels_2nd"], v2.astype(np.uint8) * 255)
        entries.append(e)
    write_json_atomic(root / "manifest.json", {"size": size, "images": entries})


SPLITS = {"train": ["chase_db1/Image_01L", "chase_db1/Image_02R"], "val": ["chase_db1/Image_03L"], "test": ["chase_db1/Image_04R"]}
STAGE_PARAMS = {"steps": 6, "patch": 32, "batch": 4, "lr": 0.01, "width": 4, "depth": 3, "threshold": 0.5, "num_threads": 1}


def test_train_segmenter_stage_is_byte_identical_and_measures_itself(tmp_path, chase_dir):
    _prepared_dir(chase_dir, tmp_path / "prepared", ("Image_01L", "Image_02R", "Image_03L", "Image_04R"))
    meta = {"splits": SPLITS}
    for name in ("a", "b"):
        metrics = V.train_segmenter_stage(tmp_path / "prepared", meta, tmp_path / name, params=STAGE_PARAMS, seed=3)
    for f in ("model.safetensors", "model.json", "metrics.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    saved = json.loads((tmp_path / "a" / "model.json").read_text())
    assert saved["train_ids"] == SPLITS["train"] and saved["binarize"] == {"rule": "threshold", "value": 0.5}
    assert metrics["segmenter"] == "unet" and metrics["test_images"] == 1 and metrics["train_images"] == 2
    assert [r["id"] for r in metrics["per_image"]] == SPLITS["test"]  # measured on test images only
    assert 0.0 <= metrics["auc"]["mean"] <= 1.0 and 0.0 <= metrics["dice"]["mean"] <= 1.0
    assert 0.85 < metrics["frangi_auc"]["mean"] < 1.0
    assert 0.7 < metrics["observer2_dice"]["mean"] < 0.9  # the second observer against the first
    segmenter, _ = V.load_vessel_segmenter(tmp_path / "a")
    img, fov, _, _ = _prepared(chase_dir, "Image_04R", 128)
    score, binary = segmenter(img, fov)
    assert segmenter.name == "unet" and np.array_equal(binary, (score > 0.5) & fov)


def test_train_segmenter_stage_without_masks_records_frangi(tmp_path, chase_dir):
    _prepared_dir(chase_dir, tmp_path / "prepared", ("Image_01L", "Image_02R", "Image_04R"), masks=False)
    metrics = V.train_segmenter_stage(tmp_path / "prepared", {"splits": SPLITS}, tmp_path / "seg", params=STAGE_PARAMS, seed=3)
    assert metrics["segmenter"] == "frangi" and "reason" in metrics
    assert sorted(p.name for p in (tmp_path / "seg").iterdir()) == ["metrics.json", "model.json", "model.safetensors"]
    segmenter, meta = V.load_vessel_segmenter(tmp_path / "seg")
    assert segmenter.name == "frangi" and meta["train_ids"] == []
    img, fov, _, _ = _prepared(chase_dir, "Image_04R", 128)
    assert np.array_equal(segmenter(img, fov)[1], V.segment_frangi(img, fov)[1])
    assert V.load_vessel_segmenter(tmp_path / "absent")[0].name == "frangi"


def test_train_segmenter_stage_refuses_test_images_in_training(tmp_path, chase_dir):
    _prepared_dir(chase_dir, tmp_path / "prepared", ("Image_01L", "Image_04R"))
    bad = {"splits": {"train": ["chase_db1/Image_01L", "chase_db1/Image_04R"], "val": [], "test": ["chase_db1/Image_04R"]}}
    with pytest.raises(AssertionError, match="also in the test split"):
        V.train_segmenter_stage(tmp_path / "prepared", bad, tmp_path / "seg", params=STAGE_PARAMS, seed=3)


def test_train_fraction_rule_marks_the_training_masks_share():
    masks = [np.zeros((10, 10), bool), np.zeros((10, 10), bool)]
    masks[0][:1] = True
    masks[1][:3] = True
    fovs = [np.ones((10, 10), bool)] * 2
    assert V.resolve_binarize_rule("train_fraction", masks, fovs) == {"rule": "top_fraction", "value": 0.2}
    with pytest.raises(InputError, match="segmenter.threshold"):
        V.resolve_binarize_rule(1.5, masks, fovs)
