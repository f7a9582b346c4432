import numpy as np
import torch

from medrestore.degradations import corrupt, to_float
from medrestore.inference import restore_array
from medrestore.models import build_model


def _random_dncnn():
    # Untrained DnCNN-17 with unit-gain weights, so its output depends on every pixel it sees.
    torch.manual_seed(0)
    net = build_model("dncnn")
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.orthogonal_(m.weight)
    return net.eval()


def test_tiled_equals_untiled_when_overlap_covers_receptive_field(retina):
    net = _random_dncnn()
    noisy, _ = corrupt(retina[400:600, 300:530], {"kind": "gaussian", "sigma": 25}, [1])
    img = to_float(noisy)
    whole = restore_array(net, img, tile=4096, overlap=0)
    tiled = restore_array(net, img, tile=64, overlap=20)  # DnCNN-17 sees 17 px each side
    assert whole.shape == img.shape
    assert np.abs(whole - tiled).max() < 1e-4


def test_tiling_without_overlap_leaves_seams(retina):
    net = _random_dncnn()
    img = to_float(retina[400:528, 400:528])
    whole = restore_array(net, img, tile=4096, overlap=0)
    seams = restore_array(net, img, tile=64, overlap=0)
    assert np.abs(whole - seams).max() > 1e-3  # the overlap is what makes tiling exact


def test_restore_handles_odd_sizes(retina):
    net = build_model("redae").eval()
    img = to_float(retina[:77, :131])
    assert restore_array(net, img, tile=50, overlap=8).shape == img.shape
