import numpy as np
import pytest
import torch

from medrestore.degradations import corrupt, to_float
from medrestore.models import (
    MODELS,
    build_model,
    count_parameters,
    load_model,
    save_model,
)
from medrestore.models.classical import median_filter, nl_means


def test_dncnn_has_17_conv_layers_64_filters_and_15_batchnorms():
    net = build_model("dncnn")
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(convs) == 17 and len(bns) == 15
    assert all(c.out_channels == 64 for c in convs[:-1]) and convs[-1].out_channels == 3
    # 3*64*9+64 + 15*(64*64*9 + 2*64) + 64*3*9+3
    assert count_parameters(net) == 1792 + 15 * (36864 + 128) + 1731


def test_dncnn_predicts_the_residual():
    net = build_model("dncnn").eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), x - net.body(x))


def test_redae_layers_follow_seed_000():
    net = build_model("redae")
    assert [c.out_channels for c in net.enc] == [16, 32, 64, 128]
    assert [c.out_channels for c in net.dec] == [64, 32, 16, 3]
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in net.modules())
    x = torch.rand(2, 3, 37, 41)
    assert net(x).shape == x.shape


@pytest.mark.parametrize("name", sorted(MODELS))
def test_save_and_load_round_trip_without_pickle(tmp_path, name):
    net = build_model(name).eval()
    save_model(net, tmp_path, name=name, kwargs={})
    loaded, meta = load_model(tmp_path)
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x))
    assert meta["model"] == name and meta["parameters"] == count_parameters(net)


def test_nl_means_and_median_beat_noisy_input_on_fundus(retina):
    crop = retina[560:720, 560:720]
    noisy, _ = corrupt(crop, {"kind": "gaussian", "sigma": 25}, [3])
    ref = to_float(crop)

    def err(img):
        return float(np.mean((img - ref) ** 2))

    assert err(nl_means(to_float(noisy), 25)) < 0.25 * err(to_float(noisy))
    assert err(median_filter(to_float(noisy), 25)) < 0.5 * err(to_float(noisy))


SR_MODELS = {n for n, s in MODELS.items() if s.task == "sr"}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_restores_at_the_target_size(name):
    kwargs = {"scale": 4} if name in SR_MODELS else {}
    net = build_model(name, **kwargs).eval()
    x = torch.rand(1, 3, 9, 11)  # odd sizes: padding models pad and crop back
    with torch.no_grad():
        y = net(x)
    s = 4 if name in SR_MODELS else 1
    assert y.shape == (1, 3, 9 * s, 11 * s)


def test_pad_to_multiple_reflects_and_crop_undoes_it():
    from medrestore.models.padding import crop_to, pad_to_multiple

    x = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).reshape(2, 3, 5, 6)
    padded, size = pad_to_multiple(x, 4)
    assert padded.shape[-2:] == (8, 8) and size == (5, 6)
    assert torch.equal(padded[..., 5, :6], x[..., 3, :])  # reflection, not zeros
    assert torch.equal(crop_to(padded, size), x)
    tiny, _ = pad_to_multiple(torch.rand(1, 1, 2, 2), 16)  # too small to reflect: replicate
    assert tiny.shape[-2:] == (16, 16)


def test_baselines_bicubic_upsamples_and_clahe_raises_local_contrast(chase_image):
    from medrestore.models import BASELINES

    img = to_float(chase_image[400:464, 400:464])
    small = img[::4, ::4]
    up = BASELINES["bicubic"](small, 0.0, scale=4)
    assert up.shape == img.shape and 0 <= up.min() and up.max() <= 1
    assert np.mean((up - img) ** 2) < np.mean((np.repeat(np.repeat(small, 4, 0), 4, 1) - img) ** 2)  # beats nearest
    flat = 0.4 + 0.2 * (img - img.mean())  # a washed-out image
    out = BASELINES["clahe"](flat, 0.0)
    assert out.shape == flat.shape and out.std() > 1.5 * flat.std()
