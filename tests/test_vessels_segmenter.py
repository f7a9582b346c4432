"""medrestore.vessels.segmenter: the U-Net segmenter as a model (any input size, tiled application,
saving and loading like the restoration models)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medrestore import vessels as V
from medrestore.core.io import InputError
from medrestore.models.unet import UNet
from medrestore.training.segmenter import train_segmenter
from vessels_data import one_torch_thread, small_training_set  # noqa: F401  (one_torch_thread: autouse fixture)


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


def test_segmenter_round_trips_and_bad_folders_raise_input_error(tmp_path, chase_dir):
    images, masks, fovs = small_training_set(chase_dir)
    train_segmenter(images, masks, fovs, tmp_path / "seg", steps=2, patch_size=32, batch_size=2, width=4, in_channels=1)
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
        train_segmenter(images, masks, fovs, tmp_path / "x", steps=1, patch_size=256)


def test_saved_segmenter_is_readable_by_all_and_says_what_it_is(tmp_path):
    """save_segmenter writes through models.save_model: weights readable by every user (safetensors
    may recreate its file with the process umask), model.json naming the network and its task."""
    import os
    import stat

    torch.manual_seed(0)
    kwargs = {"in_channels": 3, "out_channels": 1, "depth": 2, "width": 4}
    unet = UNet(**kwargs)
    old = os.umask(0o077)
    try:
        V.save_segmenter(unet, tmp_path / "seg", kwargs=kwargs, extra={"train_ids": ["a"]})
    finally:
        os.umask(old)
    for name in ("model.safetensors", "model.json"):
        assert stat.S_IMODE((tmp_path / "seg" / name).stat().st_mode) == 0o644, name
    meta = json.loads((tmp_path / "seg" / "model.json").read_text())
    assert meta == {"model": "unet", "task": "vessel-segmentation", "kwargs": kwargs,
                    "parameters": sum(p.numel() for p in unet.parameters()), "train_ids": ["a"]}
    model, _ = V.load_segmenter(tmp_path / "seg")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), unet.state_dict().values()))
