import numpy as np
import pytest
import torch

from medrestore.models import MODELS, build_model, count_parameters, load_model, save_model
from medrestore.models.classical import median_filter, nl_means
from medrestore.degradations import corrupt, to_float


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
    err = lambda img: float(np.mean((img - ref) ** 2))  # noqa: E731
    assert err(nl_means(to_float(noisy), 25)) < 0.25 * err(to_float(noisy))
    assert err(median_filter(to_float(noisy), 25)) < 0.5 * err(to_float(noisy))
