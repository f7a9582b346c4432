"""Laplacian pyramid super-resolution network, LapSRN (Lai et al. 2017), as planned in Krenz2018.

Krenz2018 (intra-operative fundus super-resolution and deblurring): "Laplacian pyramid network:
1. Progressive Reconstruction 2. Residual Learning 3. Low-resolution filters 4. Non-SR-case: Add
residual to HR-images"; "Red: 3x3 convolution, blue: transposed convolution, green summation";
robust Charbonnier loss; "Replace transposed convolutions (avoid checkerboard artifacts)" after
Odena et al. 2016.

Architecture (Lai et al., CVPR 2017), one pyramid level per x2:

* input conv 3x3 C -> 64, LeakyReLU(0.2), applied once to the low-resolution image;
* feature-extraction branch, per level: ``depth`` x (conv 3x3 64 -> 64, LeakyReLU 0.2), then a x2
  upsampling of the features (transposed conv 4x4 stride 2, LeakyReLU), then a conv 3x3 64 -> C that
  predicts the level's sub-band residual; the upsampled features feed the next level;
* image-reconstruction branch, per level: the current image is upsampled x2 (transposed conv 4x4
  stride 2 initialised to the bilinear kernel and trained, one kernel per channel) and the residual
  is added; the sum is this level's output and the next level's input.

``scale`` 2 / 4 / 8 gives 1 / 2 / 3 levels; ``forward`` returns the finest output and
``forward_pyramid`` every level's output, coarse to fine (x2 then x4 for ``scale=4``), for the
multi-level Charbonnier loss (``medrestore.training.losses.multiscale_charbonnier``).

Options beyond the 2017 paper, both asked for by Krenz2018:

* ``upsample="resize_conv"``: the feature upsampling is nearest-neighbour x2 then a 3x3 conv
  (Odena et al.'s resize-convolution), and the image branch is a fixed bilinear x2, so no layer
  has the uneven kernel overlap that makes checkerboards. ``"deconv"`` is Lai's original.
* ``scale=1`` ("non-SR case", deblurring): one level without any upsampling; the predicted residual
  is added to the input image.

Deviations: colour input (``channels=3``; Lai works on Y). The residual convs are zero-initialised
(``zero_init_residual=True``), so at initialisation the network is the identity (``scale=1``) or the
bilinear-like upsampling of its image branch; Lai initialises every conv with He's method. Other
convs use He initialisation for LeakyReLU(0.2), biases zero. ``depth`` (10) is a parameter.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from medrestore.models.registry import register_model

UPSAMPLE_MODES = ("deconv", "resize_conv")


def bilinear_kernel(size: int = 4) -> torch.Tensor:
    """The size x size kernel that makes a stride-(size//2) transposed conv a bilinear upsampling."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = torch.arange(size, dtype=torch.float32)
    k1 = 1 - (og - center).abs() / factor
    return k1[:, None] * k1[None, :]


class _Level(nn.Module):
    def __init__(self, channels: int, features: int, depth: int, upscale: bool, upsample: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *[m for _ in range(depth) for m in (nn.Conv2d(features, features, 3, padding=1),
                                                nn.LeakyReLU(0.2, inplace=True))]
        )
        self.upscale = upscale
        self.upsample = upsample
        if upscale and upsample == "deconv":
            self.feat_up = nn.Sequential(nn.ConvTranspose2d(features, features, 4, stride=2, padding=1),
                                         nn.LeakyReLU(0.2, inplace=True))
            self.img_up = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, groups=channels, bias=False)
        elif upscale:
            self.feat_up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(features, features, 3, padding=1),
                nn.LeakyReLU(0.2, inplace=True),
            )
            self.img_up = None  # fixed bilinear interpolation
        else:
            self.feat_up = nn.Identity()
            self.img_up = None
        self.residual = nn.Conv2d(features, channels, 3, padding=1)

    def forward(self, feat: torch.Tensor, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.feat_up(self.body(feat))
        if self.upscale:
            if self.img_up is not None:
                img = self.img_up(img)
            else:
                img = F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False)
        return feat, img + self.residual(feat)


class LapSRN(nn.Module):
    def __init__(
        self,
        channels: int = 3,
        scale: int = 4,
        depth: int = 10,
        features: int = 64,
        upsample: str = "deconv",
        zero_init_residual: bool = True,
    ) -> None:
        super().__init__()
        if scale < 1 or scale & (scale - 1):
            raise ValueError(f"LapSRN scale must be 1 (deblurring) or a power of 2, got {scale}")
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"LapSRN upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        self.scale = scale
        self.upsample = upsample
        n_levels = max(1, int(math.log2(scale)))
        self.head = nn.Sequential(nn.Conv2d(channels, features, 3, padding=1), nn.LeakyReLU(0.2, inplace=True))
        self.levels = nn.ModuleList([_Level(channels, features, depth, scale > 1, upsample) for _ in range(n_levels)])
        self._init(zero_init_residual)

    def _init(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for level in self.levels:
            if level.img_up is not None:
                with torch.no_grad():
                    level.img_up.weight.copy_(bilinear_kernel(4).expand_as(level.img_up.weight))
            if zero_init_residual:
                nn.init.zeros_(level.residual.weight)
                nn.init.zeros_(level.residual.bias)

    def forward_pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every level's output, coarse to fine: [x2, x4] for ``scale=4``, [x] for ``scale=1``."""
        feat, img = self.head(x), x
        outputs = []
        for level in self.levels:
            feat, img = level(feat, img)
            outputs.append(img)
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_pyramid(x)[-1]


register_model("lapsrn", LapSRN, "sr", "Krenz2018 (LapSRN, Lai et al. 2017; scale=1 for deblurring)")
