"""DnCNN (Zhang et al. 2017), as used for fundus denoising in Hayee2017.

Hayee2017: "17 identical convolutional layers (64 filters, 3x3 kernel) with ReLU activation, and
the interior 15 layers having batch normalization as well. The network learns the noise [...]
and so the output is then subtracted from the input noisy image."

Layer 1: conv 3x3 -> 64, ReLU. Layers 2-16: conv 3x3 64 -> 64 (no bias), BN, ReLU.
Layer 17: conv 3x3 64 -> C. ``forward`` returns the restored image ``x - noise``; training on
the restored image with MSE is the same objective as DnCNN's residual loss.

Deviation: Hayee2017 started from weights pre-trained on BSD; none can be downloaded here, so
the network is trained from scratch. Convolutions are initialised orthogonally with gain 0.2 (as the
KAIR reference code does): with gain 1 the initial residual is large and Adam settles on the
identity map (measured: loss stuck at the noise variance for 200 steps).
"""

from __future__ import annotations

import torch
from torch import nn

from medrestore.models.registry import register_model


class DnCNN(nn.Module):
    def __init__(self, channels: int = 3, depth: int = 17, features: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, features, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [
                nn.Conv2d(features, features, 3, padding=1, bias=False),
                nn.BatchNorm2d(features, eps=1e-4),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.Conv2d(features, channels, 3, padding=1))
        self.body = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.orthogonal_(m.weight, gain=0.2)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.body(x)


register_model("dncnn", DnCNN, "denoise", "Hayee2017 (DnCNN-17, Zhang et al. 2017)")
register_model("dncnn-green", DnCNN, "denoise", "Hayee2017 (DnCNN-17 with the R:G:B = 1:3:2 weighted loss)")
register_model("dncnn-blind", DnCNN, "denoise",
               "Hayee2017 network on the blind sigma range (Zhang et al.'s DnCNN-B setting)")
