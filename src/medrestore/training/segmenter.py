"""Training of the vessel segmenter (:mod:`medrestore.vessels.segmenter`): a U-Net on random
patches of fundus images with manual vessel masks, through the same engine as the restoration
models (:func:`~medrestore.training.engine.seed_run`, :func:`~medrestore.training.engine.make_trainer`,
the cosine schedule of :func:`~medrestore.training.config.cosine_factor`).

What it does not share with :func:`~medrestore.training.engine.train_model`: the restoration module
(``RestorationModule``) is tied to paired image patches, PSNR validation and checkpoint resume; a
segmenter run is a few hundred steps (seconds to a minute on CPU), so it has no validation, early
stopping or resume, and keeps the last weights.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from medrestore.models.unet import UNet
from medrestore.training.callbacks import ProgressLog
from medrestore.training.config import cosine_factor
from medrestore.training.engine import make_trainer, seed_run
from medrestore.training.losses import bce_dice_loss
from medrestore.vessels.frangi import _fov_or_all
from medrestore.vessels.segmenter import _input_array, save_segmenter


def _stack(arrays: list[np.ndarray]) -> torch.Tensor:
    """A float32 tensor of the stacked arrays."""
    return torch.from_numpy(np.ascontiguousarray(np.stack(arrays)).astype(np.float32))


class _PatchBatches(Dataset):
    """Item ``i`` is the whole batch of training step ``i``: a pure function of (seed, i).

    ``images``: float32 C x H x W; ``masks`` and ``fovs``: float32 H x W of 0/1 (the FOV is the
    loss weight).

    Each patch: an image drawn uniformly, a top-left corner drawn uniformly among those whose
    patch centre is inside that image's FOV, one of the 8 flips/rotations.
    """

    def __init__(self, images, masks, fovs, *, steps: int, patch_size: int, batch_size: int, seed: int,
                 augment: bool) -> None:
        self.images, self.masks, self.fovs = images, masks, fovs
        self.steps, self.p, self.batch_size, self.seed, self.augment = steps, patch_size, batch_size, seed, augment
        half = patch_size // 2
        self.corners = []
        for fov in fovs:
            h, w = fov.shape
            inner = fov[half : h - patch_size + half + 1, half : w - patch_size + half + 1] > 0
            self.corners.append(np.argwhere(inner))
        self.usable = [k for k, c in enumerate(self.corners) if len(c)]

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int):
        rng = np.random.default_rng([self.seed, int(step)])
        p, xs, ys, ws = self.p, [], [], []
        for _ in range(self.batch_size):
            k = self.usable[int(rng.integers(len(self.usable)))]
            top, left = self.corners[k][int(rng.integers(len(self.corners[k])))]
            x = self.images[k][:, top : top + p, left : left + p]
            y = self.masks[k][None, top : top + p, left : left + p]
            f = self.fovs[k][None, top : top + p, left : left + p]
            r = int(rng.integers(8)) if self.augment else 0
            if r >= 4:
                x, y, f = x[..., ::-1], y[..., ::-1], f[..., ::-1]
            x, y, f = (np.rot90(a, r % 4, axes=(-2, -1)) for a in (x, y, f))
            xs.append(x)
            ys.append(y)
            ws.append(f)
        return _stack(xs), _stack(ys), _stack(ws)


class SegmenterModule(L.LightningModule):
    """The U-Net ``net`` trained on BCE + soft Dice over the FOV (:func:`~medrestore.training.losses.bce_dice_loss`),
    Adam at ``lr`` with a cosine decay to ``lr_min`` over ``steps``; keeps every step's loss."""

    def __init__(self, net: UNet, lr: float, lr_min: float, steps: int) -> None:
        super().__init__()
        self.net = net
        self.lr, self.lr_min, self.steps = lr, lr_min, steps
        self.losses: list[float] = []

    def training_step(self, batch, batch_idx):
        x, y, w = batch
        loss = bce_dice_loss(self.net(x), y, w)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"segmenter training loss became {loss.item()} at step {self.global_step}. Fix: lower the learning "
                "rate (lr)."
            )
        self.losses.append(float(loss.detach()))
        return loss

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        # No clamp of the floor at 1 here (TrainConfig's cosine has one): lr_min above lr makes the
        # rate rise, as it always did for the segmenter.
        sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_factor(self.lr_min / self.lr, self.steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _check_settings(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], fovs: Sequence[np.ndarray] | None,
                    *, steps: int, batch_size: int, patch_size: int, depth: int) -> None:
    """Refuse mismatched or missing inputs and settings the U-Net cannot train with (``ValueError``)."""
    if not (len(images) == len(masks) and (fovs is None or len(fovs) == len(images))):
        raise ValueError(f"train_segmenter: {len(images)} images, {len(masks)} masks, "
                         f"{None if fovs is None else len(fovs)} FOV masks: give one of each per image")
    if not images:
        raise ValueError("train_segmenter: no training images")
    if steps < 1 or batch_size < 1 or patch_size < 2**depth:
        raise ValueError(f"train_segmenter: need steps >= 1, batch_size >= 1, patch_size >= 2**depth ({2**depth}); got "
                         f"{steps}, {batch_size}, {patch_size}")


def _training_arrays(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], fovs: Sequence[np.ndarray] | None,
                     in_channels: int, patch_size: int) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Per image: the network's float32 C x H x W input, the vessel mask and the FOV (the whole image
    without ``fovs``) as float32 0/1; each mask the image's size, each image at least ``patch_size``."""
    xs, ys, fs = [], [], []
    for i, img in enumerate(images):
        x = _input_array(img, in_channels)
        m = np.asarray(masks[i]).astype(bool)
        f = _fov_or_all(None if fovs is None else fovs[i], x.shape[1:])
        if m.shape != x.shape[1:]:
            raise ValueError(f"train_segmenter: image {i} is {x.shape[1:]} but its mask is {m.shape}")
        if min(m.shape) < patch_size:
            raise ValueError(f"train_segmenter: image {i} ({m.shape}) is smaller than patch_size {patch_size}: lower "
                             "patch_size")
        xs.append(x)
        ys.append(m.astype(np.float32))
        fs.append(f.astype(np.float32))
    return xs, ys, fs


def _fit(module: SegmenterModule, loader: DataLoader, steps: int, accelerator: str, num_threads: int | None) -> int:
    """Fit ``module`` for ``steps`` steps in a temporary Lightning folder, on ``num_threads`` torch CPU
    threads (restored afterwards); returns the steps done."""
    threads_before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    with tempfile.TemporaryDirectory(prefix="medrestore-seg-") as root, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
        tty = sys.stderr.isatty()  # Lightning's bar on a terminal only; a progress line every 5% of the steps in a log
        progress = [] if tty else [ProgressLog("segmenter", steps,
                                               loss=lambda: module.losses[-1] if module.losses else None)]
        trainer = make_trainer(root, accelerator=accelerator, devices=1, max_steps=steps, max_epochs=1,
                               enable_progress_bar=tty, callbacks=progress)
        try:
            trainer.fit(module, loader)
        finally:
            torch.set_num_threads(threads_before)
    return int(trainer.global_step)


def _training_summary(steps: int, settings: dict[str, Any], images: int, num_threads: int,
                      losses: list[float]) -> dict[str, Any]:
    """``model.json``'s ``train``: the steps done, the run's ``settings``, the number of images, the torch
    threads, the mean loss of the first and of the last 10 steps."""
    k = min(10, len(losses))
    return {
        "steps": steps,
        **settings,
        "images": images,
        "num_threads": num_threads,
        "loss_first10": round(float(np.mean(losses[:k])), 6),
        "loss_last10": round(float(np.mean(losses[-k:])), 6),
        "loss": "bce+dice",
    }


def train_segmenter(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    fovs: Sequence[np.ndarray] | None,
    out_dir: str | Path,
    *,
    steps: int = 300,
    patch_size: int = 64,
    batch_size: int = 8,
    lr: float = 1e-2,
    lr_min: float = 1e-4,
    seed: int = 0,
    depth: int = 3,
    width: int = 8,
    in_channels: int = 3,
    augment: bool = True,
    accelerator: str = "cpu",
    num_threads: int | None = None,
    extra_meta: dict | None = None,
) -> dict[str, Any]:
    """Train a :class:`~medrestore.models.unet.UNet` on random patches; save it to ``out_dir``.

    ``images``: RGB uint8 (or float in [0, 1]) fundus images; ``masks``: their boolean vessel masks;
    ``fovs``: boolean FOV masks (None: whole images). Patches of ``patch_size`` px are drawn with
    their centre in the FOV (:class:`_PatchBatches`: the batch of step ``s`` depends only on
    ``(seed, s)``); loss BCE + soft Dice over the FOV pixels (:func:`bce_dice_loss`); Adam with a
    cosine decay from ``lr`` to ``lr_min``. On CPU, the same inputs and seed give byte-identical
    weights. The defaults are the setting measured in :mod:`medrestore.vessels` (300 steps at
    256 px: held-out AUC 0.944-0.968, above Frangi on every held-out image).

    ``num_threads``: torch CPU threads during training (None: leave torch's setting; restored
    afterwards). On cores shared with another job, 2 threads were measured 20x slower per step
    than 1 (OpenMP threads wait for each other on busy cores). Weights are byte-identical for the
    same inputs, seed and thread count.

    Engine: Lightning, set up as for the restoration models (module docstring), for the same
    accelerator choice (``accelerator="gpu"``).

    Writes ``model.safetensors`` and ``model.json`` (:func:`save_segmenter`; ``extra_meta`` is
    added to ``model.json``); returns the training summary stored in ``model.json`` under ``train``.
    """
    _check_settings(images, masks, fovs, steps=steps, batch_size=batch_size, patch_size=patch_size, depth=depth)
    xs, ys, fs = _training_arrays(images, masks, fovs, in_channels, patch_size)
    data = _PatchBatches(xs, ys, fs, steps=steps, patch_size=patch_size, batch_size=batch_size, seed=seed,
                         augment=augment)
    if not data.usable:
        raise ValueError("train_segmenter: no image has a patch centre inside its FOV: check the FOV masks")

    seed_run(seed)
    kwargs = {"in_channels": in_channels, "out_channels": 1, "depth": depth, "width": width}
    module = SegmenterModule(UNet(**kwargs), lr, lr_min, steps)
    loader = DataLoader(data, batch_size=None, shuffle=False, num_workers=0)
    done = _fit(module, loader, steps, accelerator, num_threads)
    settings = {"patch_size": patch_size, "batch_size": batch_size, "lr": lr, "lr_min": lr_min, "seed": seed,
                "augment": augment}
    threads = torch.get_num_threads() if num_threads is None else num_threads
    summary = _training_summary(done, settings, len(xs), threads, module.losses)
    save_segmenter(module.net.cpu().eval(), out_dir, kwargs=kwargs, extra={"train": summary, **(extra_meta or {})})
    return summary


__all__ = ["SegmenterModule", "train_segmenter"]
