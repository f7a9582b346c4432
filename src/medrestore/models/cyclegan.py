"""Two-way GAN for unpaired fundus enhancement (Zhao et al., MICCAI 2019), Zhao2019.

Zhao2019: "Our generator consists of 3 convolutional and deconvolutional layers and a residual
bottleneck module. The input image is passed into the first convolutional layer with kernel size
of 7x7x64 and stride 1, which is followed by two downsampling convolutional layers whose kernel
sizes are 3x3x128 and 3x3x256 respectively. The deconvolutional layers have the same kernel sizes
as the corresponding convolutional layers. The bottleneck module contains 9 residual blocks, in
which two convolutional layers and one skip connection are employed. Our discriminator consists of
5 convolutional layers, where the convolutional kernels with 3x3 and stride 2 are applied for 4
times downsampling. The Patch-GAN [4] is utilized"; least-squares GAN; "all convolutional layers
in discriminator are selected to computing L_Cfea" (the feature-consistency loss, weight 10);
identity loss weight 10; adversarial weight 1. Two generators (G_e: blurry -> clear, G_b: clear ->
blurry) and two discriminators share these structures.

:class:`ResnetGenerator` is CycleGAN's ResNet-9 generator (Zhu et al. 2017) with those sizes:
reflect-pad 3, conv 7x7 C -> 64, IN, ReLU; conv 3x3 stride 2 -> 128, IN, ReLU; conv 3x3 stride 2
-> 256, IN, ReLU; 9 x [reflect-pad 1, conv 3x3, IN, ReLU, reflect-pad 1, conv 3x3, IN, + input];
transposed conv 3x3 stride 2 -> 128, IN, ReLU; transposed conv 3x3 stride 2 -> 64, IN, ReLU;
reflect-pad 3, conv 7x7 64 -> C, tanh. Instance norm without affine parameters, conv biases on, as
CycleGAN's code. 11,378,179 parameters for RGB.

:class:`PatchDiscriminator`: 5 convs 3x3 (the seed's kernel size; CycleGAN's PatchGAN has 4x4):
C -> 64 stride 2, LeakyReLU(0.2); 64 -> 128, 128 -> 256, 256 -> 512, each stride 2, IN,
LeakyReLU(0.2); 512 -> 1 stride 1, a map of patch scores at 1/16 resolution.
``forward_features`` returns the outputs of all 5 conv layers (after their activation; the last
is the score map) for the feature-consistency loss. 1,555,585 parameters for RGB.

Deviations: the project's images are [0, 1]; the generator maps its input to [-1, 1] (as CycleGAN's
data loader does) and its tanh output back to [0, 1]. The discriminator's output is linear (no
sigmoid) because the seed trains it with the least-squares loss; ``sigmoid=True`` gives the
paper's d in [0, 1]. Generator inputs whose sides are not multiples of 4 are reflect-padded
bottom/right and cropped back. Discriminator inputs must be at least 32x32 (instance norm needs
more than one pixel after the 4th stride-2 conv). Weights start N(0, 0.02) as CycleGAN's.

Options that deviate from Zhao2019 (off by default; params.yaml's standard profile turns them on,
docs/pipeline.md, Training):

- ``upsample="resize"``: each transposed convolution becomes nearest-neighbour x2 upsampling, then
  reflect-pad 1 and a 3x3 convolution (a resize-convolution, Odena et al. 2016). A stride-2
  transposed 3x3 convolution covers the output pixels unevenly (4, 2 or 1 kernel taps by the parity
  of the pixel's row and column) and paints a 2-px checkerboard until training evens it out; a
  resize-convolution treats every output pixel alike. It costs more operations (the 3x3 convs run
  at the upsampled resolution).
- ``residual=True``: the generator outputs its input plus a correction,
  ``out = in + conv_7x7(features)`` in [-1, 1] (no tanh), with that last convolution's weights and
  bias zero at the start, so the untrained generator returns its input exactly. A few hundred
  steps of batch 1 (the budget of 2 CPU cores) leave a generator that starts from random weights
  far from any photograph (a red checkerboard, 3 dB below the degraded input); one that starts at
  the identity can only move away from its input where its losses ask it to. Outputs may leave
  [0, 1] slightly; the evaluation clips them.
- ``norm="none"``: no instance normalisation in the generator. Instance normalisation removes each
  feature map's mean and scale over the image, so a generator with it cannot see the absolute
  colour of its input (the cataract haze is mostly a colour veil); without it, its weights start
  He-normal (fan-in, ReLU gain) and the second convolution of each residual block at zero, so each
  block starts as the identity (Fixup-style) and activations keep their scale through 9 blocks.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from medrestore.models.padding import crop_to, pad_to_multiple
from medrestore.models.registry import register_model

MULTIPLE = 4  # two stride-2 convs


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


UPSAMPLE = ("deconv", "resize")
NORMS = ("instance", "none")


def _norm(kind: str, features: int) -> nn.Module:
    return nn.InstanceNorm2d(features) if kind == "instance" else nn.Identity()


class ResnetBlock(nn.Module):
    def __init__(self, features: int, norm: str = "instance") -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(features, features, 3), _norm(norm, features), nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(features, features, 3), _norm(norm, features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    def __init__(self, channels: int = 3, features: int = 64, n_blocks: int = 9, upsample: str = "deconv",
                 residual: bool = False, norm: str = "instance") -> None:
        super().__init__()
        if upsample not in UPSAMPLE:
            raise ValueError(f"upsample {upsample!r}: use one of {', '.join(UPSAMPLE)}")
        if norm not in NORMS:
            raise ValueError(f"norm {norm!r}: use one of {', '.join(NORMS)}")
        self.residual = bool(residual)
        f = features
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(channels, f, 7), _norm(norm, f),
                                   nn.ReLU(inplace=True)]
        for mult in (1, 2):  # 64 -> 128 -> 256
            layers += [nn.Conv2d(f * mult, f * mult * 2, 3, stride=2, padding=1), _norm(norm, f * mult * 2),
                       nn.ReLU(inplace=True)]
        layers += [ResnetBlock(f * 4, norm) for _ in range(n_blocks)]
        for mult in (4, 2):  # 256 -> 128 -> 64
            if upsample == "deconv":
                layers.append(nn.ConvTranspose2d(f * mult, f * mult // 2, 3, stride=2, padding=1, output_padding=1))
            else:
                layers += [
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    nn.ReflectionPad2d(1),
                    nn.Conv2d(f * mult, f * mult // 2, 3),
                ]
            layers += [_norm(norm, f * mult // 2), nn.ReLU(inplace=True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(f, channels, 7)]
        if not self.residual:
            layers.append(nn.Tanh())
        self.model = nn.Sequential(*layers)
        _init_weights(self)
        if norm == "none":
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            for block in self.model:
                if isinstance(block, ResnetBlock):
                    nn.init.zeros_(block.body[5].weight)  # each residual block starts as the identity
        if self.residual:
            last = self.model[-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, MULTIPLE)
        z = x * 2.0 - 1.0
        y = self.model(z)
        if self.residual:
            y = z + y
        return crop_to((y + 1.0) * 0.5, size)


class PatchDiscriminator(nn.Module):
    def __init__(self, channels: int = 3, features: int = 64, sigmoid: bool = False) -> None:
        super().__init__()
        f = features
        widths = [f, 2 * f, 4 * f, 8 * f]
        blocks: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(channels, f, 3, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True))
        ]
        for c_in, c_out in itertools.pairwise(widths):
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(c_in, c_out, 3, stride=2, padding=1),
                    nn.InstanceNorm2d(c_out),
                    nn.LeakyReLU(0.2, inplace=True),
                )
            )
        last: list[nn.Module] = [nn.Conv2d(widths[-1], 1, 3, stride=1, padding=1)]
        if sigmoid:
            last.append(nn.Sigmoid())
        blocks.append(nn.Sequential(*last))
        self.blocks = nn.ModuleList(blocks)
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of all 5 conv layers (after activation), the last being the patch score map."""
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[-1]


register_model(
    "cyclegan-fc",
    ResnetGenerator,
    "enhance",
    "Zhao2019 (two-way GAN with feature-consistency loss, Zhao et al. 2019)",
    "cyclegan",
    PatchDiscriminator,
    {"cycle": "feature"},
)
register_model(
    "cyclegan",
    ResnetGenerator,
    "enhance",
    "Zhao2019 ablation (image-level cycle loss, Zhu et al. 2017)",
    "cyclegan",
    PatchDiscriminator,
    {"cycle": "image"},
)
