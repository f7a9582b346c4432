"""medrestore.training.segmenter: training the U-Net vessel segmenter on CHASE_DB1 (real images,
manual masks).

U-Net after the 400-step training below (one CPU thread): held-out AUC 0.968 (Image_05L) and
0.945 (Image_09R) against Frangi's 0.943 and 0.925; Dice 0.756/0.663 against 0.706/0.545
(measured at 300 steps; see the test for why 400).
"""

from __future__ import annotations

from medrestore import vessels as V
from medrestore.training.segmenter import train_segmenter
from vessels_data import one_torch_thread, prepared, small_training_set  # noqa: F401  (one_torch_thread: autouse fixture)


def test_segmenter_training_is_deterministic(tmp_path, chase_dir):
    images, masks, fovs = small_training_set(chase_dir)
    kw = {"steps": 6, "patch_size": 32, "batch_size": 4, "lr": 1e-2, "width": 4}
    for name, seed in [("a", 5), ("b", 5), ("c", 6)]:
        train_segmenter(images, masks, fovs, tmp_path / name, seed=seed, **kw)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["model.json", "model.safetensors"]
    for name in ("model.safetensors", "model.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "model.safetensors").read_bytes() != (tmp_path / "c" / "model.safetensors").read_bytes()


def test_unet_trained_briefly_beats_frangi_on_held_out_chase_images(tmp_path, chase_dir):
    train = [prepared(chase_dir, s, 256) for s in ("Image_01L", "Image_02R", "Image_03L", "Image_04R")]
    summary = train_segmenter(
        [t[0] for t in train], [t[2] for t in train], [t[1] for t in train], tmp_path / "unet",
        # 400 steps: at 300 the AUC on Image_09R was 0.928 on an AVX-512/AMX CPU (0.943 with 2 threads), below
        # the bar, while another machine passed; trained weights depend on the CPU (README).
        steps=400, patch_size=64, batch_size=8, lr=1e-2, width=8, seed=0,
    )
    assert summary["loss_last10"] < 0.6 * summary["loss_first10"]
    model, _ = V.load_segmenter(tmp_path / "unet")
    for stem in ("Image_05L", "Image_09R"):  # never seen in training
        img, fov, v1, _ = prepared(chase_dir, stem, 256)
        unet = V.vessel_scores(*V.segment_unet(model, img, fov), v1, fov)
        frangi = V.vessel_scores(*V.segment_frangi(img, fov), v1, fov)
        assert unet["auc"] >= 0.93 and unet["auc"] > frangi["auc"] + 0.01, (stem, unet, frangi)
        assert unet["dice"] > frangi["dice"], (stem, unet, frangi)
