"""Convolutional denoising autoencoder, "CNN DAE" (Gondara 2016), Gondara2016.

Gondara2016: "Relatively simple architecture was used for convolutional denoising autoencoder (CNN
DAE), shown in Fig. 5"; images resized to 64x64, grayscale (mammograms, dental X-rays); Keras;
100 epochs, batch size 10; the autoencoder maps x in [0,1]^d through s(Wx + b) and reconstructs
with "similar mapping"; squared error or cross-entropy as reconstruction error.

Fig. 5 is a picture and is not in the seed text, and no copy of it could be consulted here. The
layers below are the published figure (arXiv:1608.04667, Fig. 5) as recalled, a Keras-style stack
with 'same' padding:

    conv 3x3 -> 64, ReLU ; max-pool 2x2
    conv 3x3 -> 32, ReLU ; max-pool 2x2          (encoding: H/4 x W/4 x 32)
    conv 3x3 -> 32, ReLU ; upsample x2 (nearest)
    conv 3x3 -> 64, ReLU ; upsample x2 (nearest)
    conv 3x3 -> C, sigmoid

This reading of the figure is unverified; the widths are therefore constructor arguments (``widths=(64, 32)``).
Parameters: 47,425 for C = 1, 49,731 for C = 3.

Deviations: ``channels`` defaults to 3 (RGB fundus, as every model in this project) instead of the
paper's 1. Inputs whose sides are not multiples of 4 (two 2x2 pools) are reflect-padded on the
bottom/right and the output cropped back; the paper only used 64x64.
"""

from __future__ import annotations

import torch
from torch import nn

from medrestore.models.padding import crop_to, pad_to_multiple
from medrestore.models.registry import register_model

MULTIPLE = 4  # two 2x2 max-pools


class CDAE(nn.Module):
    def __init__(self, channels: int = 3, widths: tuple[int, int] = (64, 32)) -> None:
        super().__init__()
        w1, w2 = widths
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, w1, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(w1, w2, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(w2, w2, 3, padding=1), nn.ReLU(inplace=True), nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(w2, w1, 3, padding=1), nn.ReLU(inplace=True), nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(w1, channels, 3, padding=1), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, MULTIPLE)
        return crop_to(self.decoder(self.encoder(x)), size)


register_model("cdae", CDAE, "denoise", "Gondara2016 (convolutional denoising autoencoder, Gondara 2016)")
