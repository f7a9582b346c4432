"""Convolutional autoencoder with symmetric skip connections (Hayee2017, after Mao et al. 2016).

Hayee2017: "4 convolution layers with ReLU activation with increasing number of filters
(16, 32, 64, 128) with 3x3 kernel to act as the encoder, and a symmetric set of 4 convolution
layers to act as the decoder (the final layer is a convolution layer with 3 filters) [...] no max
pool layers [...] skip connections add every other encoder layer to its symmetric decoder
counterpart".

Encoder e1..e4: 16, 32, 64, 128. Decoder d1..d4: 64, 32, 16, C. "Every other" encoder layer is
read as e1 and e3: e3 is added to d1 (both 64 channels) and e1 to d3 (both 16), each before the
ReLU, as in RED-Net. The last layer is linear (no ReLU) so the output can reach the full range.
"""

from __future__ import annotations

import torch
from torch import nn

from medrestore.models.registry import register_model


class REDAE(nn.Module):
    def __init__(self, channels: int = 3, widths: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        w1, w2, w3, w4 = widths
        self.enc = nn.ModuleList([nn.Conv2d(a, b, 3,
                                            padding=1) for a, b in [(channels, w1), (w1, w2), (w2, w3), (w3, w4)]])
        self.dec = nn.ModuleList([nn.Conv2d(a, b, 3,
                                            padding=1) for a, b in [(w4, w3), (w3, w2), (w2, w1), (w1, channels)]])
        self.act = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.act(self.enc[0](x))
        e2 = self.act(self.enc[1](e1))
        e3 = self.act(self.enc[2](e2))
        e4 = self.act(self.enc[3](e3))
        d1 = self.act(self.dec[0](e4) + e3)
        d2 = self.act(self.dec[1](d1))
        d3 = self.act(self.dec[2](d2) + e1)
        return self.dec[3](d3)


register_model("redae", REDAE, "denoise", "Hayee2017 (autoencoder with symmetric skips, Mao et al. 2016)")
