"""Inference optimisations change speed, not results."""

import torch

from medrestore.models import build_model
from medrestore.serving.bn_folding import fold_batchnorm, prepare_for_inference


def _trained_bn(name, retina):
    torch.manual_seed(0)
    net = build_model(name)
    x = torch.from_numpy(retina[500:596, 500:596].transpose(2, 0, 1).copy()).float()[None] / 255
    net.train()
    with torch.no_grad():
        for _ in range(3):  # running statistics away from their initial 0/1
            net(x + 0.05 * torch.randn_like(x))
    return net.eval(), x


def test_folded_dncnn_gives_the_same_output(retina):
    net, x = _trained_bn("dncnn", retina)
    folded, n = fold_batchnorm(net)
    assert n == 15 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # the original is untouched
    with torch.inference_mode():
        assert torch.allclose(net(x), folded(x), atol=1e-5)
        fast = prepare_for_inference(net)
        assert torch.allclose(net(x), fast(x.contiguous(memory_format=torch.channels_last)), atol=1e-5)


def test_models_without_batchnorm_are_left_as_they_are(retina):
    net, x = _trained_bn("redae", retina)
    folded, n = fold_batchnorm(net)
    assert n == 0
    with torch.inference_mode():
        assert torch.equal(net(x), folded(x))
