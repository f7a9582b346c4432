"""The seed papers' networks: layer plans, parameter counts derived from the layers, shapes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medrestore.models.cdae import CDAE
from medrestore.models.cyclegan import PatchDiscriminator, ResnetGenerator
from medrestore.models.irunet import IRUNet, _same_pad
from medrestore.models.lapsrn import LapSRN, bilinear_kernel
from medrestore.models.srresnet import SRGANDiscriminator, SRResNet


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def conv(c_in: int, c_out: int, k: int, bias: bool = True) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


def modules_of(net: nn.Module, kind) -> list:
    return [m for m in net.modules() if isinstance(m, kind)]


pytestmark = pytest.mark.usefixtures("seeded_single_thread")


# --------------------------------------------------------------------------- IRUNet (GilZuluaga2021)
def test_irunet_has_123379_parameters():
    f, c = 16, 3
    head = conv(c, f, 3)
    reduction = conv(f, f, 2) + conv(f, f, 3) + conv(f, 2 * f, 3) + conv(4 * f, f, 1)  # shortcut, 2 branches, 1x1
    inception = conv(f, f, 3) + conv(f, 2 * f, 3) + conv(f, f, 3) + conv(4 * f, f, 1)  # 3 branches, 1x1
    up = conv(f, f, 2)
    tail = conv(f, c, 1)
    expected = head + 4 * (reduction + inception) + 4 * (up + inception) + tail
    assert expected == 123_379  # the paper's count
    assert n_params(IRUNet()) == expected


def test_irunet_is_four_reductions_and_eight_inception_blocks_with_four_transposed_convs():
    net = IRUNet()
    assert len(net.down) == 4 and len(net.enc) == 4 and len(net.dec) == 4
    assert len(modules_of(net, nn.ConvTranspose2d)) == 4
    dilated = [m for m in modules_of(net, nn.Conv2d) if m.dilation == (2, 2)]
    assert len(dilated) == 8  # one per inception block
    assert len(modules_of(net, nn.AvgPool2d)) == 4  # one per reduction block


def test_irunet_uses_tensorflow_same_padding_for_strided_convs():
    assert _same_pad(96, 3, 2) == (0, 1)  # TF pads after; PyTorch padding=1 would be (1, 1)
    assert _same_pad(96, 2, 2) == (0, 0)
    assert _same_pad(95, 3, 2) == (1, 1)


def test_irunet_outputs_a_sigmoid_image_with_no_global_residual():
    net = IRUNet().eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        y = net(x)
        # Keras initialisation leaves the logits wide (identity adds accumulate): outputs may saturate.
        assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
        nn.init.zeros_(net.tail.weight)
        nn.init.zeros_(net.tail.bias)
        # With a zero output layer the result is sigmoid(0) everywhere: the input is not added back.
        assert torch.equal(net(x), torch.full_like(x, 0.5))


@pytest.mark.parametrize("size", [(96, 96), (80, 80), (37, 50), (5, 7)])
def test_irunet_handles_any_size_by_padding_to_a_multiple_of_16(size):
    net = IRUNet().eval()
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        assert net(x).shape == x.shape


def test_irunet_pads_by_reflection_and_crops_back():
    net = IRUNet().eval()
    x = torch.rand(1, 3, 40, 44)
    with torch.no_grad():
        manual = net(F.pad(x, (0, 4, 0, 8), mode="reflect"))[..., :40, :44]
        assert torch.allclose(net(x), manual)


def test_irunet_accepts_channels_last():
    net = IRUNet().eval().to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x.contiguous(memory_format=torch.channels_last)), net(x), atol=1e-6)


def test_irunet_learns_to_reduce_mae_on_real_fundus_patches(retina):
    """GilZuluaga2021's recipe (MAE, Adam with beta 0.9/0.999, eps 1e-7; lr 1e-3 instead of 1e-4 to fit in
    40 steps) fits real fundus patches with sigma-25 noise below the noisy input's own error."""
    img = torch.from_numpy(retina[..., :3].astype(np.float32) / 255.0).permute(2, 0, 1)
    corners = [(300, 300), (560, 560), (420, 700), (700, 420)]
    clean = torch.stack([img[:, r : r + 32, c : c + 32] for r, c in corners])
    gen = torch.Generator().manual_seed(1)
    noisy = (clean + 25 / 255 * torch.randn(clean.shape, generator=gen)).clamp(0, 1)
    net = IRUNet()
    noisy_mae = F.l1_loss(noisy, clean).item()  # about 0.076
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)
    with torch.no_grad():
        start = F.l1_loss(net(noisy), clean).item()
    for _ in range(40):
        opt.zero_grad()
        loss = F.l1_loss(net(noisy), clean)
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = F.l1_loss(net(noisy), clean).item()
    assert end < 0.25 * start, (start, end)
    assert end < 0.6 * noisy_mae, (noisy_mae, end)  # measured about 0.03 at 40 steps, seeds 0-2


# --------------------------------------------------------------------------- CNN DAE (Gondara2016)
def test_cdae_follows_gondara_fig5_two_pools_two_upsamples():
    net = CDAE(channels=1)
    assert [m.out_channels for m in modules_of(net, nn.Conv2d)] == [64, 32, 32, 64, 1]
    assert len(modules_of(net, nn.MaxPool2d)) == 2 and len(modules_of(net, nn.Upsample)) == 2
    for c in (1, 3):
        expected = conv(c, 64, 3) + conv(64, 32, 3) + conv(32, 32, 3) + conv(32, 64, 3) + conv(64, c, 3)
        assert n_params(CDAE(channels=c)) == expected
    assert n_params(CDAE(channels=1)) == 47_425 and n_params(CDAE(channels=3)) == 49_731


@pytest.mark.parametrize("channels,size", [(1, (64, 64)), (3, (64, 64)), (3, (37, 50))])
def test_cdae_maps_64x64_images_to_the_unit_interval(channels, size):
    net = CDAE(channels=channels).eval()
    x = torch.rand(2, channels, *size)
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1


def test_cdae_encodes_at_a_quarter_resolution():
    net = CDAE()
    assert net.encoder(torch.rand(1, 3, 64, 64)).shape == (1, 32, 16, 16)


# --------------------------------------------------------------------------- LapSRN (Krenz2018)
def _lapsrn_params(c: int, levels: int, depth: int, f: int, upsample: str) -> int:
    level = depth * conv(f, f, 3) + conv(f, c, 3)  # feature convs + residual conv
    if levels and upsample == "deconv":
        level += conv(f, f, 4) + c * 4 * 4  # feature transposed conv + per-channel image transposed conv
    elif levels:
        level += conv(f, f, 3)  # resize-conv; the image branch is a fixed bilinear x2
    return conv(c, f, 3) + max(levels, 1) * level


@pytest.mark.parametrize("upsample", ["deconv", "resize_conv"])
@pytest.mark.parametrize("scale,levels", [(1, 0), (2, 1), (4, 2), (8, 3)])
def test_lapsrn_parameter_count_follows_the_pyramid(scale, levels, upsample):
    net = LapSRN(scale=scale, upsample=upsample)
    assert n_params(net) == _lapsrn_params(3, levels, 10, 64, upsample)


def test_lapsrn_x4_reconstructs_progressively_at_x2_then_x4():
    net = LapSRN(scale=4).eval()
    x = torch.rand(2, 3, 12, 16)
    with torch.no_grad():
        pyramid = net.forward_pyramid(x)
        assert [p.shape[-2:] for p in pyramid] == [(24, 32), (48, 64)]
        assert torch.equal(net(x), pyramid[-1])


@pytest.mark.parametrize("scale", [2, 8])
def test_lapsrn_output_size_is_scale_times_input(scale):
    net = LapSRN(scale=scale, depth=2).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 8, 10)).shape == (1, 3, 8 * scale, 10 * scale)


@pytest.mark.parametrize("upsample", ["deconv", "resize_conv"])
def test_lapsrn_resize_conv_and_deconv_both_train(upsample):
    net = LapSRN(scale=4, depth=2, upsample=upsample, zero_init_residual=False)
    x = torch.rand(2, 3, 8, 8)
    out = net(x)
    assert out.shape == (2, 3, 32, 32)
    out.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    has_deconv = bool(modules_of(net, nn.ConvTranspose2d))
    assert has_deconv == (upsample == "deconv")


def test_lapsrn_resize_convolution_avoids_checkerboard_on_a_flat_image():
    """Krenz2018 replaces transposed convolutions to avoid checkerboard artifacts (Odena et al.):
    on a flat input, randomly initialised transposed convs give a period-2 pattern, resize-conv none."""
    x = torch.full((1, 3, 16, 16), 0.5)

    def checker(upsample: str) -> float:
        torch.manual_seed(3)
        net = LapSRN(scale=2, depth=1, upsample=upsample, zero_init_residual=False).eval()
        with torch.no_grad():
            y = net(x)[..., 8:-8, 8:-8]  # interior, away from zero-padded borders
        return float((y[..., 0::2, :] - y[..., 1::2, :]).abs().mean())

    assert checker("resize_conv") < 1e-6
    assert checker("deconv") > 1e-3


def test_lapsrn_image_branch_starts_as_bilinear_upsampling():
    net = LapSRN(scale=2).eval()
    k1 = torch.tensor([0.25, 0.75, 0.75, 0.25])
    assert torch.allclose(bilinear_kernel(4), k1[:, None] * k1[None, :])
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        y = net(x)  # zero-initialised residual: only the image branch contributes
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert torch.allclose(y[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-6)


def test_lapsrn_deblur_mode_adds_the_residual_to_the_input_and_is_identity_at_init():
    net = LapSRN(scale=1).eval()
    x = torch.rand(2, 3, 20, 24)
    with torch.no_grad():
        assert torch.equal(net(x), x)
        assert len(net.forward_pyramid(x)) == 1
        nn.init.normal_(net.levels[0].residual.weight, std=0.01)
        feat = net.levels[0].body(net.head(x))
        assert torch.allclose(net(x), x + net.levels[0].residual(feat))


def test_lapsrn_rejects_bad_options():
    with pytest.raises(ValueError):
        LapSRN(scale=3)
    with pytest.raises(ValueError):
        LapSRN(upsample="pixelshuffle")


# --------------------------------------------------------------------------- SRGAN (Hayee2017)
def test_srresnet_has_16_residual_blocks_of_64_filters_with_bn_and_two_subpixel_x2():
    net = SRResNet()
    assert len(net.blocks) == 16
    assert len(modules_of(net, nn.PixelShuffle)) == 2
    assert len(modules_of(net, nn.BatchNorm2d)) == 2 * 16 + 1
    assert {m.out_channels for m in modules_of(net.blocks, nn.Conv2d)} == {64}
    block = 2 * (conv(64, 64, 3) + 2 * 64) + 64  # two conv+BN, one PReLU(64)
    expected = (conv(3, 64, 9) + 64) + 16 * block + (conv(64, 64,
                                                          3) + 2 * 64) + 2 * (conv(64, 256, 3) + 64) + conv(64, 3, 9)
    assert n_params(net) == expected == 1_550_659


@pytest.mark.parametrize("scale", [2, 4])
def test_srresnet_upscales_by_its_scale(scale):
    net = SRResNet(scale=scale, n_blocks=2).eval()
    with torch.no_grad():
        assert net(torch.rand(2, 3, 10, 12)).shape == (2, 3, 10 * scale, 12 * scale)


def test_srresnet_bicubic_skip_starts_at_bicubic_interpolation_with_ledigs_parameter_count(chase_image):
    net = SRResNet(skip="bicubic").eval()
    assert n_params(net) == 1_550_659  # the skip adds no weights
    lr = torch.from_numpy(chase_image[300:332, 400:440].astype(np.float32).transpose(2, 0, 1) / 255.0)[None]
    with torch.no_grad():
        out = net(lr)
    expected = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
    assert out.shape == (1, 3, 128, 160)
    assert torch.equal(out, expected)  # the last conv starts at zero: training starts from bicubic
    with pytest.raises(ValueError, match="skip"):
        SRResNet(skip="nearest")


def test_srgan_discriminator_has_8_convs_64_to_512_stride_2_when_halving():
    net = SRGANDiscriminator()
    convs = modules_of(net, nn.Conv2d)
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 1, 2, 1, 2]
    assert {c.kernel_size for c in convs} == {(3, 3)}
    assert len(modules_of(net, nn.Linear)) == 2
    widths = [3, 64, 64, 128, 128, 256, 256, 512, 512]
    expected = sum(conv(a, b, 3) for a, b in itertools.pairwise(widths)) + 2 * sum(widths[2:])  # + 7 BNs
    expected += (512 * 6 * 6 * 1024 + 1024) + (1024 + 1)
    assert n_params(net) == expected


@pytest.mark.parametrize("size", [(96, 96), (32, 32), (48, 80), (128, 128)])
def test_srgan_discriminator_is_size_agnostic(size):
    net = SRGANDiscriminator().eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        p = net(x)
        assert p.shape == (2, 1) and float(p.min()) > 0 and float(p.max()) < 1
        assert torch.allclose(torch.sigmoid(net.logits(x)), p)


# --------------------------------------------------------------------------- two-way GAN (Zhao2019)
def test_cyclegan_generator_is_7x7_64_two_strided_9_resblocks_two_deconvs():
    net = ResnetGenerator()
    convs = modules_of(net, nn.Conv2d)
    deconvs = modules_of(net, nn.ConvTranspose2d)
    assert convs[0].kernel_size == (7, 7) and convs[0].out_channels == 64
    assert [(c.out_channels, c.stride[0], c.kernel_size[0]) for c in convs[1:3]] == [(128, 2, 3), (256, 2, 3)]
    assert [(d.out_channels, d.stride[0], d.kernel_size[0]) for d in deconvs] == [(128, 2, 3), (64, 2, 3)]
    assert convs[-1].kernel_size == (7, 7) and convs[-1].out_channels == 3
    assert len([m for m in net.modules() if type(m).__name__ == "ResnetBlock"]) == 9
    assert modules_of(net, nn.InstanceNorm2d) and not modules_of(net, nn.BatchNorm2d)
    expected = conv(3, 64, 7) + conv(64, 128, 3) + conv(128, 256, 3) + 9 * 2 * conv(256, 256, 3)
    expected += conv(256, 128, 3) + conv(128, 64, 3) + conv(64, 3, 7)
    assert n_params(net) == expected == 11_378_179


@pytest.mark.parametrize("size", [(32, 32), (30, 42)])
def test_cyclegan_generator_keeps_size_and_unit_range(size):
    net = ResnetGenerator(n_blocks=2).eval()
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1


def test_patchgan_has_5_convs_4_of_them_stride_2_and_exposes_every_conv_feature():
    net = PatchDiscriminator()
    convs = modules_of(net, nn.Conv2d)
    assert [c.stride[0] for c in convs] == [2, 2, 2, 2, 1]
    assert {c.kernel_size for c in convs} == {(3, 3)}
    widths = [3, 64, 128, 256, 512, 1]
    assert n_params(net) == sum(conv(a, b, 3) for a, b in itertools.pairwise(widths)) == 1_555_585
    feats = net.forward_features(torch.rand(2, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512, 1]
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 4]
    assert torch.equal(net(torch.zeros(1, 3, 64, 64)), net.forward_features(torch.zeros(1, 3, 64, 64))[-1])


@pytest.mark.parametrize("size", [(32, 32), (64, 64), (48, 80)])
def test_patchgan_scores_patches_of_any_input_size(size):
    net = PatchDiscriminator().eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, *size))
    assert out.shape == (2, 1, -(-size[0] // 16), -(-size[1] // 16))


# ---- the standard profile's deviations from Zhao2019 (residual output, resize-convolution, no norm)
def _chase_tensor(chase_image: np.ndarray, side: int = 128) -> torch.Tensor:
    """A side x side crop of a CHASE_DB1 photograph around its centre, as a 1 x 3 x side x side tensor in [0, 1].

    The photograph is first averaged over 2 x 2 pixels (as the prepare stage shrinks it to 512 px):
    the camera's JPEG has its own energy at the 2-px period."""
    h, w = chase_image.shape[:2]
    top, left = (h - 2 * side) // 2, (w - 2 * side) // 2
    crop = chase_image[top : top + 2 * side, left : left + 2 * side].astype(np.float32)
    crop = crop.reshape(side, 2, side, 2, 3).mean((1, 3))
    return torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))).float()[None] / 255.0


@pytest.mark.parametrize("norm", ["instance", "none"])
@pytest.mark.parametrize("upsample", ["deconv", "resize"])
def test_residual_cyclegan_generator_returns_its_input_before_training(chase_image, norm, upsample):
    net = ResnetGenerator(features=16, n_blocks=3, upsample=upsample, residual=True, norm=norm).eval()
    x = _chase_tensor(chase_image, 124)  # not a multiple of 4 on purpose: padded and cropped back
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape
    assert float((y - x).abs().max()) < 1e-6
    plain = ResnetGenerator(features=16, n_blocks=3, upsample=upsample, residual=False, norm=norm).eval()
    with torch.no_grad():
        assert float((plain(x) - x).abs().mean()) > 0.05  # the paper's generator starts far from its input


def test_resize_convolution_generator_has_no_transposed_convs_and_the_options_are_checked():
    net = ResnetGenerator(features=16, n_blocks=2, upsample="resize", residual=True, norm="none")
    assert not modules_of(net, nn.ConvTranspose2d) and len(modules_of(net, nn.Upsample)) == 2
    assert not modules_of(net, nn.InstanceNorm2d) and not modules_of(net, nn.Tanh)
    with pytest.raises(ValueError, match="upsample"):
        ResnetGenerator(upsample="pixelshuffle")
    with pytest.raises(ValueError, match="norm"):
        ResnetGenerator(norm="batch")


def _checkerboard_ratio(image: torch.Tensor) -> float:
    """Power of the 2-px periods (the Nyquist row, column and corner of the 2-D spectrum, Hann-windowed)
    over the median power of the spectrum's outer ring: a checkerboard is a peak there, a photograph is not."""
    g = image[0].mean(0).double()
    n = g.shape[-1]
    window = torch.hann_window(n, periodic=False, dtype=torch.float64)
    g = (g - g.mean()) * window[:, None] * window[None, :]  # no edge of the crop in the spectrum
    power = torch.fft.fft2(g).abs() ** 2
    half = n // 2
    nyquist = (power[half, half] + power[half, 0] + power[0, half]) / 3
    fy = torch.fft.fftfreq(n).abs()[:, None]
    fx = torch.fft.fftfreq(n).abs()[None, :]
    ring = (torch.maximum(fy, fx) > 0.35) & ~((fy == 0.5) | (fx == 0.5))
    return float(nyquist / power[ring].median())


@pytest.mark.parametrize(("upsample", "residual"),
                         [("deconv", False), ("resize", False), ("deconv", True), ("resize", True)])
def test_briefly_trained_generator_shows_a_checkerboard_only_with_transposed_convs(chase_image, upsample, residual):
    """Twenty Adam steps towards a real CHASE_DB1 crop (mirrored, so the generator has to move): with
    transposed convolutions the output spectrum has a peak at the 2-px period (a checkerboard), from
    a random start and from the identity alike; with resize-convolutions it has none."""
    torch.manual_seed(0)
    net = ResnetGenerator(
        features=16, n_blocks=2, upsample=upsample, residual=residual, norm="none" if residual else "instance"
    )
    x = _chase_tensor(chase_image, 96)
    opt = torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.5, 0.999))
    for _ in range(20):
        loss = F.l1_loss(net(x), x.flip(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = net.eval()(x)
    ratio, photo = _checkerboard_ratio(out), _checkerboard_ratio(x)
    assert photo < 2 and float((out - x).abs().mean()) > 0.02  # a photograph has no peak; the generator moved
    if upsample == "deconv":
        assert ratio > 20 * photo
    else:
        assert ratio < 2


def test_history_pool_fills_then_swaps_half_of_the_new_images_for_old_ones_and_replays(chase_image):
    from medrestore.training.gan import ImagePool

    x = _chase_tensor(chase_image, 32)
    images = [x * (0.5 + 0.05 * k) for k in range(12)]  # 12 distinct "generated" crops
    runs = []
    for _ in range(2):
        pool, shown = ImagePool(4), []
        for step, im in enumerate(images):
            shown.append(pool.query(im, np.random.default_rng([0, step, 9])))
        runs.append((shown, pool.state()))
    shown, state = runs[0]
    assert all(torch.equal(shown[k], images[k]) for k in range(4))  # filling: passed through
    later = [any(torch.equal(s, im) for im in images[:k]) for k, s in enumerate(shown) if k >= 4]
    assert 0 < sum(later) < len(later)  # some earlier images come back, not all
    assert all(torch.equal(a, b) for a, b in zip(shown, runs[1][0]))  # same rng words, same draws
    assert len(state) == 4 and all(torch.equal(a, b) for a, b in zip(state, runs[1][1]))
    restored = ImagePool(4)
    restored.load(state)
    assert all(torch.equal(a, b) for a, b in zip(restored.state(), state))
    assert torch.equal(ImagePool(0).query(x, np.random.default_rng(0)), x)
