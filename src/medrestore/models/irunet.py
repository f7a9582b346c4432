"""IRUNet (Gil Zuluaga et al. 2021), the blind microscopy denoiser of GilZuluaga2021.

GilZuluaga2021: "the first layer (conv + relu) maps the initial features followed by four *inception
reduction* and *inception blocks* building the latent space y. The image reconstruction is composed
of four transposed convolutions and inceptions blocks, the last layer is a convolutional layer with
a sigmoid activation function (conv + sigmoid)"; "a total of 123.379 trainable parameters"; MAE
loss, Adam (lr 1e-4, beta 0.9/0.999, eps 1e-7).

The paper's figure is garbled in the text, so the layers follow the authors' Keras build
(``IRUNet(H, W, C, filters=16)``, see ``docs/REFERENCE.md``):

* head: 3x3 conv C -> 16, ReLU.
* 4 encoder stages, each :class:`ReductionBlock` then :class:`InceptionBlock`.
  - reduction: shortcut = 2x2 stride-2 conv (linear); branches 3x3 stride-2 conv -> 16 (ReLU),
    3x3 stride-2 conv -> 32 (ReLU), 2x2 average pool; concatenated (64), 1x1 conv -> 16 (linear),
    added to the shortcut.
  - inception: 3x3 conv -> 16, 3x3 conv -> 32, 3x3 dilation-2 conv -> 16 (all ReLU, all on the
    block input), concatenated, 1x1 conv -> 16 (linear), added to the block input.
* 4 decoder stages: 2x2 stride-2 transposed conv -> 16 (ReLU), inception block. The outputs of
  encoder stage 2 (1/4 resolution) and stage 1 (1/2 resolution) are *added* after the 2nd and 3rd
  decoder stages; the 1/8 skip is commented out in the authors' code and the head has none.
* 1x1 conv 16 -> C, sigmoid. No global residual: the network outputs the clean image.

For C = 3 that is 448 + 4 * (9,040 + 10,320) + 4 * (1,040 + 10,320) + 51 = 123,379 parameters,
the paper's count.

Fidelity details kept from Keras: ``padding='same'`` of a stride-2 3x3 conv pads 0 before and 1
after (TensorFlow's rule), not 1/1 as a PyTorch ``padding=1`` would; kernels are initialised
He-uniform where the Keras layer says ``he_uniform`` and Glorot-uniform elsewhere, biases zero.
With that initialisation the identity adds accumulate and the pre-sigmoid logits start wide (std
about 8 on random input), so many outputs start saturated; MAE training still moves fast (see
``tests/test_models_zoo.py``), so the initialisation is kept as the authors had it.

Deviations: the authors' model has a fixed input size (96x96). Here any size works: the input is
reflect-padded (replicate-padded where it is too small to reflect) on the bottom/right to a multiple
of 16 (four stride-2 stages) and the output cropped back. ``channels`` is a parameter (the paper
is RGB only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medrestore.models.padding import crop_to, pad_to_multiple
from medrestore.models.registry import register_model

MULTIPLE = 16  # four stride-2 stages


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow ``padding='same'``: total pad split with the extra pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _SameConv(nn.Conv2d):
    """A strided conv with TensorFlow's asymmetric ``'same'`` padding."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = _same_pad(x.shape[-2], self.kernel_size[0], self.stride[0])
        left, right = _same_pad(x.shape[-1], self.kernel_size[1], self.stride[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _relu_conv(conv: nn.Module) -> nn.Module:
    conv.he_uniform = True  # marker read by IRUNet._init
    return conv


class InceptionBlock(nn.Module):
    """Three parallel ReLU convs (3x3 -> f, 3x3 -> 2f, dilated 3x3 -> f), 1x1 fusion, identity add."""

    def __init__(self, filters: int) -> None:
        super().__init__()
        f = filters
        self.branch_a = _relu_conv(nn.Conv2d(f, f, 3, padding=1))
        self.branch_b = _relu_conv(nn.Conv2d(f, 2 * f, 3, padding=1))
        self.branch_c = _relu_conv(nn.Conv2d(f, f, 3, padding=2, dilation=2))
        self.reduce = nn.Conv2d(4 * f, f, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cat = torch.cat([F.relu(self.branch_a(x)), F.relu(self.branch_b(x)), F.relu(self.branch_c(x))], dim=1)
        return x + self.reduce(cat)


class ReductionBlock(nn.Module):
    """Halves the resolution: strided-conv shortcut + (two strided ReLU convs, average pool) fused by 1x1."""

    def __init__(self, filters: int) -> None:
        super().__init__()
        f = filters
        self.shortcut = nn.Conv2d(f, f, 2, stride=2)
        self.branch_a = _relu_conv(_SameConv(f, f, 3, stride=2))
        self.branch_b = _relu_conv(_SameConv(f, 2 * f, 3, stride=2))
        self.pool = nn.AvgPool2d(2)
        self.reduce = nn.Conv2d(4 * f, f, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cat = torch.cat([F.relu(self.branch_a(x)), F.relu(self.branch_b(x)), self.pool(x)], dim=1)
        return self.shortcut(x) + self.reduce(cat)


class IRUNet(nn.Module):
    def __init__(self, channels: int = 3, filters: int = 16) -> None:
        super().__init__()
        f = filters
        self.head = _relu_conv(nn.Conv2d(channels, f, 3, padding=1))
        self.down = nn.ModuleList([ReductionBlock(f) for _ in range(4)])
        self.enc = nn.ModuleList([InceptionBlock(f) for _ in range(4)])
        self.up = nn.ModuleList([_relu_conv(nn.ConvTranspose2d(f, f, 2, stride=2)) for _ in range(4)])
        self.dec = nn.ModuleList([InceptionBlock(f) for _ in range(4)])
        self.tail = nn.Conv2d(f, channels, 1)
        self._init()

    def _init(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                if getattr(m, "he_uniform", False):
                    nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")  # = Keras he_uniform
                else:
                    nn.init.xavier_uniform_(m.weight)  # Keras default glorot_uniform
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, MULTIPLE)
        y = F.relu(self.head(x))
        skips = []
        for down, enc in zip(self.down, self.enc):
            y = enc(down(y))
            skips.append(y)  # 1/2, 1/4, 1/8, 1/16
        for i, (up, dec) in enumerate(zip(self.up, self.dec)):
            y = dec(F.relu(up(y)))
            if i == 1:
                y = y + skips[1]  # 1/4: encoder stage 2
            elif i == 2:
                y = y + skips[0]  # 1/2: encoder stage 1
        y = torch.sigmoid(self.tail(y))
        return crop_to(y, size)


register_model("irunet", IRUNet, "denoise", "GilZuluaga2021 (IRUNet blind denoiser, Gil Zuluaga et al. 2021)")
