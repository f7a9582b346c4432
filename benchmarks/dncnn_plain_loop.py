"""DnCNN-17 in a plain PyTorch loop, without the training engine: is the engine what makes DnCNN
learn slowly? Same patches as the pipeline (``dvc repro`` the data stages first), Adam 1e-3, batch 8
of 40 px sigma-25 patches, validation PSNR on the first 512 validation patches every 50 steps, in
eval mode (BatchNorm running statistics) and in train mode (batch statistics).

    .venv/bin/python benchmarks/dncnn_plain_loop.py [as_is | kaiming] [--steps 400]

``as_is``: the model's own initialisation (orthogonal, gain 0.2); ``kaiming``: Kaiming-normal for the
convolutions followed by batch norm, the last convolution orthogonal with gain 0.2.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from medrestore.data.patches import load_patches
from medrestore.models.dncnn import DnCNN
from medrestore.pipeline.train import train_targets

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("init", nargs="?", default="as_is", choices=["as_is", "kaiming"])
    ap.add_argument("--steps", type=int, default=400)
    args = ap.parse_args()
    torch.manual_seed(0)
    art = REPO / "artifacts"
    clean, noisy = train_targets(art / "patches",
                                 art / "corrupt/denoise-g25"), load_patches(art / "corrupt/denoise-g25", "train")

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))).float() / 255

    vc, vn = t(load_patches(art / "patches", "val")[:512]), t(load_patches(art / "corrupt/denoise-g25", "val")[:512])
    net = DnCNN()
    if args.init == "kaiming":
        convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
        for m in convs[:-1]:
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        torch.nn.init.orthogonal_(convs[-1].weight, gain=0.2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)

    def psnr(train_mode: bool) -> float:
        net.train(train_mode)
        with torch.no_grad():
            out = torch.cat([net(vn[i : i + 64]).clamp(0, 1) for i in range(0, len(vn), 64)])
        net.train(True)
        return float((10 * torch.log10(1 / ((out - vc) ** 2).flatten(1).mean(1))).mean())

    start = time.time()
    for step in range(1, args.steps + 1):
        idx = rng.integers(0, len(clean), 8)
        loss = torch.nn.functional.mse_loss(net(t(noisy[idx])), t(clean[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            print(step, f"{time.time() - start:.1f} s", f"loss {loss.item():.5f}", f"eval {psnr(False):.2f}",
                  f"trainmode {psnr(True):.2f}", flush=True)


if __name__ == "__main__":
    main()
