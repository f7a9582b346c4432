"""A small U-Net for retinal vessel segmentation (after Ronneberger, Fischer and Brox 2015).

Ronneberger O., Fischer P., Brox T., "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015, LNCS 9351, pp. 234-241 (arXiv:1505.04597).

What is kept: a contracting path of levels of two 3x3 convolutions + ReLU, each followed by 2x2 max
pooling that halves the size while the width doubles; an expanding path that upsamples by 2, halves
the width and concatenates the feature map of the same level from the contracting path, then
applies two 3x3 convolutions + ReLU; a final 1x1 convolution.

What differs, and why:
- "same" (zero-padded) 3x3 convolutions instead of unpadded ones, so the output has the input's
  size and no skip feature map has to be cropped (the paper's overlap-tile strategy is replaced
  by padding here and by overlapping tiles in :func:`medrestore.vessels.segment`);
- BatchNorm after every convolution (not in the paper): trains from scratch in a few hundred steps;
- upsampling by bilinear interpolation followed by a 3x3 convolution instead of the 2x2 "up-
  convolution" (transposed convolution), which avoids checkerboard artefacts (Krenz2018's
  resize-convolution);
- far smaller: ``depth`` poolings (default 3, the paper has 4) and ``width`` channels at the first
  level (default 8, the paper has 64; 134,673 parameters at depth 3);
- one output channel of logits (vessel vs background; apply a sigmoid for probabilities), trained
  with BCE + soft Dice (see :mod:`medrestore.vessels`) instead of a two-class softmax with a
  pixel-wise border weight map.

Any input size works: the input is padded (reflection where the image is large enough, else edge
replication) up to the next multiple of ``2 ** depth`` and the output is cropped back. Input: RGB
(``in_channels=3``) or the green channel alone (``in_channels=1``), float in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _Up(nn.Module):
    """Bilinear x2, 3x3 conv halving the width, concatenation with the skip, then a double conv."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                                    nn.ReLU(inplace=True))
        self.block = _block(2 * cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.block(torch.cat([skip, self.reduce(x)], dim=1))


class UNet(nn.Module):
    """U-Net with ``depth`` poolings and ``width * 2**level`` channels per level; returns logits."""

    def __init__(self, in_channels: int = 3, out_channels: int = 1, depth: int = 3, width: int = 8) -> None:
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"UNet needs depth >= 1 and width >= 1, got depth={depth}, width={width}")
        self.in_channels, self.depth = in_channels, depth
        widths = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([_block(in_channels,
                                          widths[0])] + [_block(widths[i], widths[i + 1]) for i in range(depth)])
        self.up = nn.ModuleList([_Up(widths[i + 1], widths[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(widths[0], out_channels, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def multiple(self) -> int:
        """Sizes that need no padding are multiples of this."""
        return 2**self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = "reflect" if (ph < h and pw < w) else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.depth:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for up, skip in zip(self.up, reversed(skips)):
            x = up(x, skip)
        return self.head(x)[..., :h, :w]
