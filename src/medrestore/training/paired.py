"""Supervised restoration on (degraded, clean) pairs: denoising, deblurring and super-resolution.

:class:`RestorationModule` is also the base of the GAN modules (:mod:`medrestore.training.gan`):
validation (PSNR of ``self.net`` on the paired validation patches), best-weights selection,
augmentation, memory layout and the NaN guard live here once.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytorch_lightning as L
import torch

from medrestore.models import build_model
from medrestore.training.callbacks import non_finite_error, on_curve
from medrestore.training.config import TrainConfig, make_optimizer, make_scheduler
from medrestore.training.losses import PerceptualLoss, VesselProbabilityLoss, make_loss


def psnr_per_image(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR of each image of a batch (values in [0, 1]); with ``mask`` (N x 1 x H x W, 1 inside the
    FOV) over the masked pixels only, as the evaluation's psnr_fov (an empty mask counts the whole patch)."""
    err = (pred.clamp(0, 1) - target) ** 2
    if mask is None:
        mse = err.flatten(1).mean(1)
    else:
        weight = mask.expand_as(err).flatten(1)
        inside = weight.sum(1)
        mse = torch.where(inside > 0, (err.flatten(1) * weight).sum(1) / inside.clamp_min(1), err.flatten(1).mean(1))
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))


def inside_fov(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``pred`` inside the FOV and the target outside it: a pixel loss of the result counts the FOV only
    (no value and no gradient outside), the rule of the evaluation's psnr_fov."""
    return pred if mask is None else torch.where(mask > 0.5, pred, target)


#: The keys of ``cfg.perceptual`` per backbone (``weight`` multiplies the term). ``vessel``: the frozen
#: vessel segmenter's features (:class:`~medrestore.training.losses.VesselFeatures`); ``vessel_prob``: its
#: probability map, thin vessels weighted (:class:`~medrestore.training.losses.VesselProbabilityLoss`).
PERCEPTUAL_KEYS = {
    "vgg19": {"backbone", "weight", "layers", "criterion", "scale"},
    "vgg16": {"backbone", "weight", "layers", "criterion", "scale"},
    "discriminator": {"backbone", "weight", "criterion"},
    "vessel": {"backbone", "weight", "layers", "criterion", "scale", "path"},
    "vessel_prob": {"backbone", "weight", "thin_weight", "threshold", "path"},
}


def make_perceptual(spec: dict, discriminator: torch.nn.Module | None = None) -> tuple[torch.nn.Module | None, float]:
    """``cfg.perceptual`` -> (loss, weight); ``{}`` or weight 0 -> (None, 0)."""
    weight = float(spec.get("weight", 0.0)) if spec else 0.0
    if not spec or weight == 0.0:
        return None, 0.0
    backbone = spec.get("backbone", "vgg19")
    if backbone not in PERCEPTUAL_KEYS:
        raise ValueError(f"unknown perceptual backbone {backbone!r}; known: {', '.join(PERCEPTUAL_KEYS)}")
    unknown = sorted(set(spec) - PERCEPTUAL_KEYS[backbone])
    if unknown:
        raise ValueError(f"perceptual backbone {backbone!r}: unknown key(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(PERCEPTUAL_KEYS[backbone]))}")
    if backbone == "discriminator":
        if discriminator is None:
            raise ValueError("perceptual backbone 'discriminator' needs a GAN model (srgan); this model trains "
                             "without one")
        return PerceptualLoss("discriminator", backbone=discriminator, criterion=spec.get("criterion", "l1")), weight
    if backbone == "vessel_prob":
        kwargs = {k: spec[k] for k in ("thin_weight", "threshold") if k in spec}
        return VesselProbabilityLoss(spec.get("path", "artifacts/segmenter"), **kwargs), weight
    kwargs = {k: spec[k] for k in ("layers", "criterion", "scale") if k in spec}
    if backbone == "vessel":
        kwargs["path"] = spec.get("path", "artifacts/segmenter")
    return PerceptualLoss(backbone, **kwargs), weight


class RestorationModule(L.LightningModule):
    def __init__(self, cfg: TrainConfig, run: str = "") -> None:
        super().__init__()
        self.cfg = cfg
        self.run = run or cfg.model
        self.net = build_model(cfg.model, **cfg.model_kwargs)
        self.loss_fn = make_loss(cfg.loss, **cfg.loss_kwargs)
        self.pyramid = bool(getattr(self.loss_fn, "pyramid", False))
        if self.pyramid and not hasattr(self.net, "forward_pyramid"):
            raise ValueError(f"loss {cfg.loss!r} needs a pyramid network (lapsrn), not {cfg.model!r}")
        self.best_psnr = -math.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.ckpt_path: Path | None = None
        self._val: list[tuple[float, float, int]] = []
        self._setup_extra()

    def _setup_extra(self) -> None:
        self.perceptual, self.perceptual_weight = make_perceptual(self.cfg.perceptual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    # ---- shared pieces
    def _augment(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # One of the 8 dihedral transforms per batch, a function of (seed, step): resumable.
        k = int(np.random.default_rng([self.cfg.seed, self.global_step, 8]).integers(0, 8))
        if k >= 4:
            tensors = tuple(t.flip(-1) for t in tensors)
        return tuple(torch.rot90(t, k % 4, (-2, -1)) for t in tensors)

    def _batch(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(degraded, clean, FOV mask or None) of a training batch, laid out and augmented."""
        x, y, mask = (*batch, None)[:3]
        x, y = self._layout(x), self._layout(y)
        if self.cfg.augment:
            x, y, *rest = self._augment(x, y, *([] if mask is None else [mask]))
            mask = rest[0] if rest else None
        return x, y, mask

    def _check(self, value: torch.Tensor, what: str) -> None:
        if not torch.isfinite(value):
            raise non_finite_error(self.run, int(self.global_step), what, float(value.detach()), self.ckpt_path)

    def on_fit_start(self) -> None:
        if self.cfg.channels_last:
            self.to(memory_format=torch.channels_last)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else x

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["medrestore_best"] = {"psnr": self.best_psnr, "state": self.best_state}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        best = checkpoint.get("medrestore_best") or {}
        self.best_psnr = best.get("psnr", -math.inf)
        self.best_state = best.get("state")

    def content_loss(self, x: torch.Tensor, y: torch.Tensor,
                     mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixel loss + weighted perceptual term, the restored image); with ``mask`` (a paired
        model with ``fov_loss``) both terms see the restored image inside the FOV only
        (:func:`inside_fov`). The pyramid loss (LapSRN's levels) stays over the whole patch."""
        if self.pyramid:
            preds = self.net.forward_pyramid(x)
            loss, pred = self.loss_fn(preds, y), preds[-1]
            scored = pred
        else:
            pred = self.net(x)
            scored = inside_fov(pred, y, mask)
            loss = self.loss_fn(scored, y)
        if self.perceptual is not None:
            loss = loss + self.perceptual_weight * self.perceptual(scored, y)
        return loss, pred

    # ---- training
    def training_step(self, batch, batch_idx):
        x, y, mask = self._batch(batch)
        loss, _ = self.content_loss(x, y, mask)
        self._check(loss, "the training loss")
        if on_curve(self.global_step + 1):  # the step this batch completes; the curve reads it then
            self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=x.shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        x, y, mask = (*batch, None)[:3]
        x = self._layout(x)
        pred = self.net(x)
        loss = self.loss_fn([pred], y) if self.pyramid else self.loss_fn(inside_fov(pred, y, mask), y)
        psnr = psnr_per_image(pred, y, mask)
        self._val.append((float(loss) * x.shape[0], float(psnr.sum()), x.shape[0]))

    def on_validation_epoch_end(self) -> None:
        n = sum(v[2] for v in self._val)
        if n == 0:
            return
        val_loss = sum(v[0] for v in self._val) / n
        val_psnr = sum(v[1] for v in self._val) / n
        self._val.clear()
        self.log("val_loss", val_loss, sync_dist=True)
        self.log("val_psnr", val_psnr, prog_bar=True, sync_dist=True)
        if not self.trainer.sanity_checking and val_psnr > self.best_psnr:
            self.best_psnr = val_psnr
            self.best_state = {k: v.detach().cpu().clone().contiguous() for k, v in self.net.state_dict().items()}

    def configure_optimizers(self):
        opt = make_optimizer(self.net.parameters(), self.cfg)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": make_scheduler(opt, self.cfg), "interval": "step"}}
