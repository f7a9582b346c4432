import numpy as np
import torch

from medrestore.degradations import corrupt, to_float
from medrestore.models import build_model
from medrestore.serving.inference import restore_array


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


def _tiny_srresnet(scale=2):
    torch.manual_seed(0)
    return build_model("srresnet", scale=scale, n_blocks=1, features=8).eval()


def test_super_resolution_tiles_paste_at_scale_and_match_untiled(chase_image):
    from medrestore.serving.inference import model_scale

    net = _tiny_srresnet(2)
    img = to_float(chase_image[300:370, 400:461])  # odd sizes: tiles at the borders are partial
    whole = restore_array(net, img, tile=4096, overlap=0)
    tiled = restore_array(net, img, tile=24, overlap=16)
    assert whole.shape == (140, 122, 3)
    assert np.abs(whole - tiled).max() < 1e-4
    assert model_scale(net) == 2 and model_scale(net, {"kwargs": {"scale": 4}}) == 4  # model.json wins


class _OOMAbove(torch.nn.Module):
    """Wraps a model; raises out-of-memory for inputs larger than ``limit`` px on a side."""

    def __init__(self, net, limit, error):
        super().__init__()
        self.net, self.limit, self.error, self.calls = net, limit, error, []

    def forward(self, x):
        self.calls.append(tuple(x.shape[-2:]))
        if max(x.shape[-2:]) > self.limit:
            raise self.error
        return self.net(x)


def test_out_of_memory_halves_the_tile_until_it_fits(chase_image):
    import pytest

    net = _random_dncnn()
    img = to_float(chase_image[300:396, 400:496])
    expected = restore_array(net, img, tile=4096, overlap=0)
    for error in (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
                  RuntimeError("DefaultCPUAllocator: can't allocate memory: out of memory")):
        wrapped = _OOMAbove(net, 80, error)
        with pytest.warns(RuntimeWarning, match="restored with 32 px tiles"):
            # optimise copies the model
            out = restore_array(wrapped, img, tile=128, overlap=20, scale=1, optimise=False)
        assert np.abs(out - expected).max() < 1e-4  # 20 px of overlap covers DnCNN-17's field
        assert max(max(c) for c in wrapped.calls[-4:]) <= 80
    with pytest.raises(RuntimeError, match="even with 32 px tiles.*Fix"):
        restore_array(_OOMAbove(net, 10, torch.OutOfMemoryError("out of memory")), img, tile=64, overlap=4, scale=1)
    with pytest.raises(RuntimeError, match="shape mismatch"):  # other errors are not swallowed
        restore_array(_OOMAbove(net, 10, RuntimeError("shape mismatch")), img, tile=64, overlap=4, scale=1)


def test_bf16_autocast_stays_close_to_float32_and_tiles_alike(chase_image):
    net = _random_dncnn()
    img = to_float(corrupt(chase_image[300:460, 400:560], {"kind": "gaussian", "sigma": 25}, [2])[0])
    full = restore_array(net, img, tile=4096, overlap=0)
    bf16 = restore_array(net, img, tile=4096, overlap=0, precision="bf16")
    bf16_tiled = restore_array(net, img, tile=64, overlap=20, precision="bf16")
    assert bf16.dtype == np.float32 and bf16.shape == img.shape
    assert not np.array_equal(bf16, full)  # bf16 really ran
    psnr = 10 * np.log10(1 / np.mean((bf16 - full) ** 2))
    assert psnr > 35, psnr
    assert np.abs(bf16 - bf16_tiled).max() < 0.02


def test_unknown_precision_is_refused():
    import pytest

    with pytest.raises(ValueError, match="float32, bf16"):
        restore_array(_random_dncnn(), np.zeros((16, 16, 3), np.float32), precision="fp8")
