"""The vessel-aware loss terms on a real CHASE_DB1 photograph: the segmenter-feature perceptual loss
and the thin-vessel weighted vessel-probability loss (medrestore.training.losses), built on a U-Net segmenter
trained here on CHASE_DB1's manual masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medrestore.training.config import TrainConfig
from medrestore.training.losses import PerceptualLoss, VesselProbabilityLoss, thin_structure
from medrestore.training.paired import make_perceptual
from medrestore.training.segmenter import train_segmenter
from medrestore.vessels.scoring import thin_vessel_mask
from vessels_data import one_torch_thread, prepared  # noqa: F401  (one_torch_thread: autouse fixture)


@pytest.fixture(scope="module")
def segmenter_dir(tmp_path_factory, chase_dir):
    data = [prepared(chase_dir, s, 384) for s in ("Image_01L", "Image_02R", "Image_03L")]
    out = tmp_path_factory.mktemp("seg") / "segmenter"
    train_segmenter([d[0] for d in data], [d[2] for d in data], [d[1] for d in data], out, steps=150, patch_size=64,
                    batch_size=4, width=8, lr=0.01, seed=3)
    return out


@pytest.fixture(scope="module")
def crop(chase_dir):
    """A 96 px window of a CHASE_DB1 test photograph with many vessels, as a (1, 3, H, W) tensor."""
    image, fov, vessels, _ = prepared(chase_dir, "Image_05L", 384)
    t, l = 150, 120
    x = image[t : t + 96, l : l + 96].astype(np.float32) / 255.0
    return torch.from_numpy(x).permute(2, 0, 1)[None].contiguous(), vessels[t : t + 96, l : l + 96]


def test_thin_structure_marks_vessels_at_most_two_pixels_wide():
    m = torch.zeros(1, 1, 40, 40, dtype=torch.bool)
    m[0, 0, 5, 2:38] = True          # 1 px line
    m[0, 0, 12:14, 2:38] = True      # 2 px line
    m[0, 0, 20:25, 2:38] = True      # 5 px bar
    thin = thin_structure(m)[0, 0]
    assert thin[5, 2:38].all() and thin[12:14, 2:38].all()
    assert not thin[20:25].any()
    assert not thin[~m[0, 0]].any()


def test_thin_structure_agrees_with_the_scoring_rule_on_a_real_mask(chase_dir):
    """The loss's opening-based rule and the scoring's skeleton/distance rule mark mostly the same
    pixels of CHASE_DB1's manual mask (the loss's is a cheap stand-in for the scoring segmenter's)."""
    _, fov, vessels, _ = prepared(chase_dir, "Image_05L", 384)
    ours = thin_structure(torch.from_numpy(vessels)[None, None])[0, 0].numpy() & fov
    scoring = thin_vessel_mask(vessels, fov)
    inter = (ours & scoring).sum()
    assert ours.sum() > 100 and scoring.sum() > 100
    assert inter / ours.sum() > 0.6 and inter / scoring.sum() > 0.3


def test_vessel_probability_loss_prefers_kept_vessels_and_weights_thin_ones(segmenter_dir, crop):
    x, _ = crop
    blurred = torch.from_numpy(ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, 1.5, 1.5)).astype(np.float32))
    loss = VesselProbabilityLoss(segmenter_dir, thin_weight=4.0)
    plain = VesselProbabilityLoss(segmenter_dir, thin_weight=0.0)
    same, blur = float(loss(x, x)), float(loss(blurred, x))
    assert blur > same + 0.02  # blurring the vessels away costs
    # the thin weight puts more of the cost on thin vessels: the blurred image loses them first
    assert float(loss(blurred, x)) - float(loss(x, x)) > float(plain(blurred, x)) - float(plain(x, x))
    with pytest.raises(ValueError, match="thin_weight"):
        VesselProbabilityLoss(segmenter_dir, thin_weight=-1)


def test_vessel_terms_train_the_image_not_the_frozen_segmenter(segmenter_dir, crop):
    x, _ = crop
    for spec in ({"backbone": "vessel", "layers": [0, 1, 2, 3], "weight": 1.0, "path": str(segmenter_dir)},
                 {"backbone": "vessel_prob", "thin_weight": 4.0, "weight": 1.0, "path": str(segmenter_dir)}):
        term, weight = make_perceptual(spec)
        assert weight == 1.0
        pred = (x + 0.05 * torch.randn_like(x)).clamp(0, 1).requires_grad_(True)
        term(pred, x).backward()
        assert pred.grad is not None and pred.grad.abs().sum() > 0
        assert all(p.grad is None and not p.requires_grad for p in term.parameters())


def test_feature_term_is_zero_on_the_clean_image_and_grows_with_noise(segmenter_dir, crop):
    x, _ = crop
    term = PerceptualLoss("vessel", path=segmenter_dir, layers=[0, 1, 2, 3])
    g = torch.Generator().manual_seed(0)
    values = [float(term((x + s * torch.randn(x.shape, generator=g)).clamp(0, 1), x)) for s in (0.0, 0.02, 0.1)]
    assert values[0] == 0.0 and values[0] < values[1] < values[2]


def test_perceptual_settings_name_unknown_keys_and_backbones():
    with pytest.raises(ValueError, match="unknown key.*thin_weigth"):
        make_perceptual({"backbone": "vessel_prob", "weight": 1.0, "thin_weigth": 3})
    with pytest.raises(ValueError, match="unknown perceptual backbone 'vesel'"):
        make_perceptual({"backbone": "vesel", "weight": 1.0})
    assert make_perceptual({"backbone": "vessel_prob", "weight": 0.0}) == (None, 0.0)
    assert TrainConfig(model="cdae").perceptual == {}
