"""SRResNet generator and SRGAN discriminator (Ledig et al. 2017), as used in Hayee2017.

Hayee2017: "The generator network is deep, consisting of 16 residual blocks. Each residual block
contains two convolutional layers with 64 filters with 3x3 kernel size, followed by
batch-normalization and ReLU activation. The resolution of the input image is increased by two
sub-pixel convolution layers. The discriminator network consists of eight convolutional layers
with increasing number of filters (64, 128, 256, 512) and a constant 3x3 kernel. A stride of 2 is
used to reduce the image dimensions when the number of features is doubled. The last two layers
are dense layers, followed by a sigmoid activation layer"; loss = content + 1e-3 x adversarial,
VGG19 feature loss; the generator is pre-trained alone first (Hayee2017 started from Ledig's
ImageNet weights).

Generator (:class:`SRResNet`), as in Ledig et al. (whose pre-trained network Hayee2017 fine-tuned):
conv 9x9 C -> 64, PReLU; 16 x [conv 3x3, BN, PReLU, conv 3x3, BN, + input]; conv 3x3, BN, + the
first conv's output; log2(scale) x [conv 3x3 64 -> 256, pixel shuffle x2, PReLU]; conv 9x9 64 -> C.
1,550,659 parameters for RGB x4.

Discriminator (:class:`SRGANDiscriminator`): conv 3x3 C -> 64, LeakyReLU(0.2); then 7 x [conv 3x3,
BN, LeakyReLU(0.2)] with (filters, stride) = (64, 2), (128, 1), (128, 2), (256, 1), (256, 2),
(512, 1), (512, 2) (Ledig's Fig. 4: the stride-2 conv of each width halves the image); dense 1024,
LeakyReLU(0.2), dense 1, sigmoid.

Deviations:
* Ledig's dense layers read the flattened 6x6x512 map of a 96x96 input, which ties the
  discriminator to that size. Here an adaptive average pool to ``pool_size`` x ``pool_size``
  (default 6, so a 96x96 input is exactly Ledig's) comes first, so any input size of at least 16
  pixels works; the dense layers are then 1x1-equivalent linear layers on a fixed-size vector.
* ``forward`` returns the probability (sigmoid) as the paper; ``logits`` returns the value before
  the sigmoid, which ``medrestore.training.losses.adversarial_bce`` prefers for numerical stability.
* Hayee2017 says "BN and ReLU" in the residual blocks; Ledig uses PReLU. ``act="prelu"`` (default,
  Ledig) or ``act="relu"`` (Hayee2017's wording).
* ``skip="bicubic"`` (not in Ledig or Hayee2017; off by default): the network's output is added to the
  bicubic-upsampled input and its last conv starts at zero, so training starts from bicubic
  interpolation and learns the missing detail (global residual learning, as VDSR and LapSRN's image
  branch). The CPU profile uses it: a few hundred steps from scratch leave Ledig's SRResNet far
  below bicubic, and a network trained on 10 px inputs whose output rests on the zero-padded borders
  fails on whole images (measured: 25.7 dB on validation patches, 13.7 dB on a whole 128 px input).
* Ledig scales HR targets to [-1, 1]; here inputs and targets are [0, 1] and the generator's last
  conv is linear (clamp at inference if needed). No pre-trained weights exist here: everything
  trains from scratch.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from medrestore.models.registry import register_model


def _act(kind: str, channels: int) -> nn.Module:
    if kind == "prelu":
        return nn.PReLU(channels)
    if kind == "relu":
        return nn.ReLU(inplace=True)
    raise ValueError(f"activation must be 'prelu' or 'relu', got {kind!r}")


class ResidualBlock(nn.Module):
    def __init__(self, features: int, act: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(features, features, 3, padding=1),
            nn.BatchNorm2d(features),
            _act(act, features),
            nn.Conv2d(features, features, 3, padding=1),
            nn.BatchNorm2d(features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SRResNet(nn.Module):
    def __init__(
        self, channels: int = 3, scale: int = 4, n_blocks: int = 16, features: int = 64, act: str = "prelu",
        skip: str = "none"
    ) -> None:
        super().__init__()
        if scale < 1 or scale & (scale - 1):
            raise ValueError(f"SRResNet scale must be a power of 2 (1 = no upsampling), got {scale}")
        if skip not in ("none", "bicubic"):
            raise ValueError(f"SRResNet skip must be 'none' (Ledig) or 'bicubic' (global residual), got {skip!r}")
        self.scale, self.skip = scale, skip
        self.head = nn.Sequential(nn.Conv2d(channels, features, 9, padding=4), _act(act, features))
        self.blocks = nn.Sequential(*[ResidualBlock(features, act) for _ in range(n_blocks)])
        self.post = nn.Sequential(nn.Conv2d(features, features, 3, padding=1), nn.BatchNorm2d(features))
        ups: list[nn.Module] = []
        for _ in range(int(math.log2(scale))):
            ups += [nn.Conv2d(features, 4 * features, 3, padding=1), nn.PixelShuffle(2), _act(act, features)]
        self.upsample = nn.Sequential(*ups)
        self.tail = nn.Conv2d(features, channels, 9, padding=4)
        if skip == "bicubic":
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        y = self.tail(self.upsample(self.post(self.blocks(h)) + h))
        if self.skip == "bicubic":
            y = y + nn.functional.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return y


class SRGANDiscriminator(nn.Module):
    # (width multiplier, stride) of convs 2..8 (64, 128, 128, 256, 256, 512, 512 filters for
    # features=64); conv 1 is (features, stride 1) without BN.
    PLAN = ((1, 2), (2, 1), (2, 2), (4, 1), (4, 2), (8, 1), (8, 2))

    def __init__(self, channels: int = 3, features: int = 64, pool_size: int = 6, dense: int = 1024) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, features, 3, padding=1), nn.LeakyReLU(0.2)]
        c_in = features
        for mult, stride in self.PLAN:
            c_out = features * mult
            layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in * pool_size * pool_size, dense),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(dense, 1),
        )

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The 8 conv layers' outputs after their activation (a perceptual backbone, as Zhao2019
        uses its discriminator's features)."""
        feats = []
        for layer in self.features:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                feats.append(x)
        return feats

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid score, shape (N, 1)."""
        return self.classifier(self.pool(self.features(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Probability that ``x`` is a real high-resolution image, shape (N, 1)."""
        return torch.sigmoid(self.logits(x))


register_model("srresnet", SRResNet, "sr", "Hayee2017 (SRResNet, the SRGAN generator, Ledig et al. 2017)")
register_model("srgan", SRResNet, "sr", "Hayee2017 (SRGAN: SRResNet + 8-conv discriminator, Ledig et al. 2017)",
               "srgan", SRGANDiscriminator)
