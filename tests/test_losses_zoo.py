"""GAN, cycle, identity, feature-consistency, multi-level and perceptual losses of the seed papers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medrestore.models.cyclegan import PatchDiscriminator
from medrestore.models.lapsrn import LapSRN
from medrestore.models.srresnet import SRGANDiscriminator
from medrestore.training import losses
from medrestore.training.losses import (
    PerceptualLoss,
    VGGFeatures,
    WeightsUnavailableError,
    adversarial_bce,
    adversarial_lsgan,
    charbonnier,
    cycle_consistency,
    feature_consistency,
    identity_loss,
    multiscale_charbonnier,
    vgg_weights_path,
)

pytestmark = pytest.mark.usefixtures("seeded_single_thread")


# --------------------------------------------------------------------------- adversarial
def test_lsgan_loss_is_zero_when_d_outputs_the_target_label():
    ones, zeros = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    assert adversarial_lsgan(ones, True) == 0 and adversarial_lsgan(zeros, False) == 0
    assert adversarial_lsgan(zeros, True) == 1 and adversarial_lsgan(ones, False) == 1
    half = torch.full((3, 1, 2, 2), 0.5)
    assert torch.isclose(adversarial_lsgan(half, True), torch.tensor(0.25))


def test_bce_on_logits_matches_bce_on_srgan_probabilities():
    d = SRGANDiscriminator().eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        logits, probs = d.logits(x), d(x)
    for real in (True, False):
        assert torch.isclose(adversarial_bce(logits, real), adversarial_bce(probs, real, from_logits=False), atol=1e-5)


def test_bce_rewards_confident_correct_discriminators():
    confident_real = torch.full((4, 1), 20.0)
    assert adversarial_bce(confident_real, True) < 1e-6
    assert adversarial_bce(confident_real, False) > 10
    assert torch.isclose(adversarial_bce(torch.zeros(4, 1), True), torch.log(torch.tensor(2.0)))


# --------------------------------------------------------------------------- cycle / identity / feature
def test_cycle_and_identity_losses_are_l1():
    a, b = torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.25)
    assert torch.isclose(cycle_consistency(a, b), torch.tensor(0.25))
    assert identity_loss(b, b) == 0


def test_feature_consistency_is_zero_for_identical_images_on_discriminator_features():
    d = PatchDiscriminator()
    x = torch.rand(2, 3, 32, 32)
    feats = d.forward_features(x)
    assert len(feats) == 5  # Zhao2019: all conv layers
    assert feature_consistency(feats, d.forward_features(x.clone())) == 0
    assert feature_consistency(d.forward_features(torch.rand(2, 3, 32, 32)), feats) > 0


def test_feature_consistency_sums_weighted_l1_over_layers_and_detaches_the_target():
    pred = [torch.zeros(1, 2, 4, 4, requires_grad=True), torch.zeros(1, 1, 2, 2, requires_grad=True)]
    target = [torch.ones(1, 2, 4, 4, requires_grad=True), torch.full((1, 1, 2, 2), 2.0, requires_grad=True)]
    assert torch.isclose(feature_consistency(pred, target), torch.tensor(3.0))
    loss = feature_consistency(pred, target, weights=[10.0, 1.0])
    assert torch.isclose(loss, torch.tensor(12.0))
    loss.backward()
    assert pred[0].grad is not None and target[0].grad is None
    with pytest.raises(ValueError):
        feature_consistency(pred, target[:1])


def test_seed003_generator_objective_backpropagates_to_the_generator():
    from medrestore.models.cyclegan import ResnetGenerator

    g_e, g_b = ResnetGenerator(n_blocks=1), ResnetGenerator(n_blocks=1)
    d_b = PatchDiscriminator()
    x = torch.rand(1, 3, 32, 32)  # blurry
    y_hat = g_e(x)
    w = losses.SEED003_WEIGHTS
    loss = (
        w["adversarial"] * adversarial_lsgan(d_b(g_b(torch.rand(1, 3, 32, 32))), True)
        + w["feature"] * feature_consistency(d_b.forward_features(g_b(y_hat)), d_b.forward_features(x))
        + w["identity"] * identity_loss(g_b(x), x)
    )
    loss.backward()
    assert all(p.grad is not None for p in g_e.parameters())


# --------------------------------------------------------------------------- LapSRN multi-level Charbonnier
def test_multiscale_charbonnier_supervises_every_pyramid_level():
    net = LapSRN(scale=4, depth=1)
    lr = torch.rand(2, 3, 8, 8)
    hr = torch.rand(2, 3, 32, 32)
    preds = net.forward_pyramid(lr)
    loss = multiscale_charbonnier(preds, hr)
    hr2 = F.interpolate(hr, size=(16, 16), mode="bicubic", align_corners=False, antialias=True)
    assert torch.isclose(loss, charbonnier(preds[0], hr2) + charbonnier(preds[1], hr))
    loss.backward()
    # perfect predictions leave only the eps floor per level
    assert torch.isclose(multiscale_charbonnier([hr2, hr], hr), torch.tensor(2e-3))


# --------------------------------------------------------------------------- perceptual
def test_perceptual_vgg19_raises_a_clear_error_when_weights_are_absent(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def no_download(*a, **k):  # any attempt to fetch must fail the test
        raise AssertionError("tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    with pytest.raises(WeightsUnavailableError) as err:
        PerceptualLoss("vgg19")
    msg = str(err.value)
    assert str(vgg_weights_path("vgg19")) in msg and "vgg19-dcbb9e9d.pth" in msg
    assert "cannot be downloaded" in msg and "discriminator" in msg


def test_vgg_features_load_only_from_the_hub_cache_and_are_frozen(tmp_path, monkeypatch):
    """The loading path, without the 548 MB file: a stand-in checkpoint with VGG19's conv layers."""
    import torchvision.models as tvm

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    path = vgg_weights_path("vgg19")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"stand-in")

    def conv_only_vgg19(weights=None):
        m = nn.Module()
        m.features = tvm.vgg.make_layers(tvm.vgg.cfgs["E"])
        return m

    state = conv_only_vgg19().state_dict()
    monkeypatch.setattr(tvm, "vgg19", conv_only_vgg19)
    monkeypatch.setattr(torch, "load", lambda p, **k: state if str(p) == str(path) else pytest.fail(p))
    feats = VGGFeatures("vgg19", ["relu2_2", "relu5_4"])
    out = feats(torch.rand(1, 3, 32, 32))
    assert [o.shape[1:] for o in out] == [(128, 16, 16), (512, 2, 2)]
    assert not any(p.requires_grad for p in feats.parameters())
    loss = PerceptualLoss("vgg19")  # Ledig's VGG54
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    assert loss(x, x.detach()) == 0
    value = loss(x, torch.rand(1, 3, 32, 32))
    value.backward()
    assert value > 0 and x.grad is not None


def test_perceptual_loss_on_discriminator_features_equals_feature_consistency():
    d = PatchDiscriminator()
    a, b = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    loss = PerceptualLoss("discriminator", backbone=d, criterion="l1")
    assert torch.isclose(loss(a, b), feature_consistency(d.forward_features(a), d.forward_features(b)))
    assert loss(a, a) == 0
    assert not list(loss.parameters())  # the discriminator is trained elsewhere, not owned by the loss


def test_perceptual_vessel_hook_needs_a_backbone_and_uses_it():
    with pytest.raises(ValueError, match="vessel"):
        PerceptualLoss("vessel")
    green_edges = nn.Conv2d(3, 1, 3, padding=1, bias=False)  # a stand-in "vessel" feature map
    loss = PerceptualLoss("vessel", backbone=green_edges)
    a = torch.rand(1, 3, 16, 16)
    assert loss(a, a) == 0 and loss(a, torch.rand(1, 3, 16, 16)) > 0
    with pytest.raises(ValueError):
        PerceptualLoss("alexnet")


def test_perceptual_vessel_loss_uses_the_saved_segmenter_frozen(tmp_path):
    """The 'vessel' backbone: a U-Net segmenter saved as the pipeline saves it, loaded from its path."""
    from medrestore.models.unet import UNet
    from medrestore.vessels import save_segmenter

    torch.manual_seed(1)
    unet = UNet(depth=2, width=4)
    save_segmenter(unet, tmp_path / "seg", kwargs={"in_channels": 3, "out_channels": 1, "depth": 2, "width": 4})
    loss = PerceptualLoss("vessel", path=tmp_path / "seg")
    assert not any(p.requires_grad for p in loss.parameters())
    a = torch.rand(2, 3, 20, 28)
    feats = loss.extract(a)
    assert [f.shape[1] for f in feats] == [4, 8, 16, 1]  # the 3 contracting levels and the vessel map
    with torch.no_grad():  # the probability map is the segmenter's own output
        assert torch.allclose(feats[-1], torch.sigmoid(unet.eval()(a)), atol=1e-6)
    x = a.clone().requires_grad_(True)
    assert loss(a, a) == 0
    value = loss(x, torch.rand(2, 3, 20, 28))
    value.backward()
    assert value > 0 and x.grad is not None and x.grad.abs().sum() > 0
    loss.train()
    assert not loss.extract.unet.training  # batch norm stays frozen


def test_make_loss_multiscale_charbonnier_takes_the_pyramid():
    from medrestore.training.losses import make_loss

    net = LapSRN(scale=4, depth=1)
    lr, hr = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 32, 32)
    loss = make_loss("multiscale_charbonnier")
    assert loss.pyramid and torch.isclose(loss(net.forward_pyramid(lr), hr),
                                          multiscale_charbonnier(net.forward_pyramid(lr), hr))
    with pytest.raises(ValueError, match="weights"):
        make_loss("weighted_mse")
