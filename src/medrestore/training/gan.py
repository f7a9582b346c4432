"""Adversarial training with Lightning's manual optimisation: SRGAN (Hayee2017) and the two-way GAN
of Zhao2019 (``cyclegan-fc``) with its image-level-cycle ablation (``cyclegan``).

Each batch makes one generator step and one discriminator step. Only the generator's optimiser
step goes through Lightning (so ``global_step`` counts batches, as in the paired engine: sampling,
checkpoints and ``max_steps`` mean the same thing for every model); the discriminator's optimiser
is stepped directly. Both optimisers, both schedulers and all networks are in the checkpoint, so a
killed run resumes exactly. The saved model is the restoration generator alone (``self.net``).

Precision: ``32-true`` and ``bf16-mixed`` work; ``16-mixed`` (a gradient scaler) is not supported
for the discriminator step, which bypasses Lightning's optimiser wrapper.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from medrestore.models import MODELS, build_discriminator, build_model
from medrestore.training.config import make_optimizer, make_scheduler
from medrestore.training.losses import (
    adversarial_bce,
    adversarial_lsgan,
    cycle_consistency,
    feature_consistency,
    identity_loss,
)
from medrestore.training.paired import RestorationModule, make_perceptual


def _freeze(*nets: torch.nn.Module, frozen: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(not frozen)


POOL_WORD = 9  # the rng stream of the history pool: [seed, step, POOL_WORD]


class ImagePool:
    """CycleGAN's history of generated images (Shrivastava et al. 2017, Zhu et al. 2017): the
    discriminator is shown, for each new generated image, with probability 1/2 an image generated
    at an earlier step (which the new one replaces in the pool), so it does not only chase the
    generator's latest output. Until the pool holds ``size`` images it passes them through. The
    draws come from the rng the caller passes (a function of seed and step: resumable) and the
    pool's images go into the checkpoint (:meth:`state`)."""

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if self.size <= 0:
            return images
        out = []
        for image in images.detach():
            image = image[None]
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif rng.random() < 0.5:
                k = int(rng.integers(0, self.size))
                out.append(self.images[k])
                self.images[k] = image.clone()
            else:
                out.append(image)
        return torch.cat(out)

    def state(self) -> list[torch.Tensor]:
        return [t.detach().cpu() for t in self.images]

    def load(self, images: list[torch.Tensor]) -> None:
        self.images = [t.clone() for t in images]


class _GANModule(RestorationModule):
    def __init__(self, cfg, run: str = "") -> None:
        super().__init__(cfg, run)
        self.automatic_optimization = False
        if cfg.precision.startswith("16"):
            raise ValueError(f"GAN training supports precision 32-true or bf16-mixed, not {cfg.precision!r}")

    def _g_step(self, loss: torch.Tensor) -> None:
        """Generator step through Lightning (counts as one ``global_step``)."""
        opt_g = self.optimizers()[0]
        opt_g.zero_grad()
        self.manual_backward(loss)
        opt_g.step()

    def _d_step(self, loss: torch.Tensor) -> None:
        """Discriminator step on the plain optimiser (not counted as a step)."""
        opt_d = self.optimizers()[1].optimizer
        opt_d.zero_grad()
        self.manual_backward(loss)
        opt_d.step()

    def _idle_d_step(self) -> None:
        """The discriminator's optimiser steps with no gradient while the generator pre-trains: no weight
        or optimiser state changes, but its scheduler (stepped every batch, so that its learning rate
        follows ``global_step``) is stepped after its optimiser, as torch requires."""
        opt_d = self.optimizers()[1].optimizer
        opt_d.zero_grad(set_to_none=True)
        opt_d.step()

    def _end_batch(self) -> None:
        for sched in self.lr_schedulers():
            sched.step()

    def configure_optimizers(self):
        cfg = self.cfg
        opt_g = make_optimizer(self.generator_parameters(), cfg)
        opt_d = make_optimizer(self.discriminator_parameters(), cfg, lr=cfg.disc_lr or cfg.lr)
        return [opt_g, opt_d], [make_scheduler(opt_g, cfg), make_scheduler(opt_d, cfg)]


class SRGANModule(_GANModule):
    """Hayee2017 / Ledig et al.: content loss for ``pretrain_steps`` (SRResNet), then each batch one
    discriminator step (BCE on real HR vs generated) and one generator step on
    content + ``adv_weight`` (1e-3) x the non-saturating adversarial loss -log D(G(x))."""

    def _setup_extra(self) -> None:
        self.disc = build_discriminator(self.cfg.model, **self.cfg.disc_kwargs)
        self.perceptual, self.perceptual_weight = make_perceptual(self.cfg.perceptual, self.disc)

    def generator_parameters(self):
        return self.net.parameters()

    def discriminator_parameters(self):
        return self.disc.parameters()

    def training_step(self, batch, batch_idx):
        x, y, mask = self._batch(batch)
        adversarial = self.global_step >= self.cfg.pretrain_steps
        if not adversarial:
            loss, _ = self.content_loss(x, y, mask)
            self._check(loss, "the content loss (pre-training)")
            self._g_step(loss)
            self._idle_d_step()
            self._end_batch()
            self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=x.shape[0])
            return
        # discriminator: real HR patches vs the generator's output (detached)
        content, pred = self.content_loss(x, y, mask)
        d_loss = adversarial_bce(self.disc.logits(y), True) + adversarial_bce(self.disc.logits(pred.detach()), False)
        self._check(d_loss, "the discriminator loss")
        self._d_step(d_loss)
        # generator: content + 1e-3 x adversarial, against the updated discriminator
        _freeze(self.disc, frozen=True)
        g_adv = adversarial_bce(self.disc.logits(pred), True)
        loss = content + self.cfg.adv_weight * g_adv
        self._check(loss, "the generator loss")
        self._g_step(loss)
        _freeze(self.disc, frozen=False)
        self._end_batch()
        self.log_dict({"train_loss": loss, "d_loss": d_loss, "g_adv": g_adv}, prog_bar=True, on_step=True,
                      on_epoch=False, batch_size=x.shape[0])


class CycleGANModule(_GANModule):
    """Zhao2019's two-way GAN: ``net`` = G_e (degraded -> clean, the saved model), ``gen_b`` = G_b
    (clean -> degraded), ``disc_e`` judges clean-domain images, ``disc_b`` degraded-domain ones.

    Generator objective (Zhao2019 eq. 1, weights 1 / 10 / 10):
    LSGAN adversarial + ``cycle_weight`` x cycle term + ``identity_weight`` x identity, where the
    cycle term is the feature-consistency loss on all conv layers of the (still training)
    discriminators (``cyclegan-fc``, eq. 3) or the image-level L1 cycle loss (``cyclegan``, eq. 2).
    Discriminators: LSGAN, real vs the generators' current outputs (Zhao2019: no history pool) or,
    with ``pool_size`` > 0, CycleGAN's history pool of generated images (:class:`ImagePool`).
    """

    def _setup_extra(self) -> None:
        cfg = self.cfg
        self.cycle = MODELS[cfg.model].options.get("cycle", "feature")
        self.gen_b = build_model(cfg.model, **cfg.model_kwargs)
        self.disc_e = build_discriminator(cfg.model, **cfg.disc_kwargs)
        self.disc_b = build_discriminator(cfg.model, **cfg.disc_kwargs)
        self.pool_e, self.pool_b = ImagePool(cfg.pool_size), ImagePool(cfg.pool_size)
        self.perceptual, self.perceptual_weight = None, 0.0
        if cfg.perceptual:
            raise ValueError("cyclegan models have no paired target for a perceptual loss; their feature loss is "
                             "built in")

    def generator_parameters(self):
        return itertools.chain(self.net.parameters(), self.gen_b.parameters())

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["medrestore_pools"] = {"e": self.pool_e.state(), "b": self.pool_b.state()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        pools = checkpoint.get("medrestore_pools") or {}
        self.pool_e.load(pools.get("e", []))
        self.pool_b.load(pools.get("b", []))

    def discriminator_parameters(self):
        return itertools.chain(self.disc_e.parameters(), self.disc_b.parameters())

    def training_step(self, batch, batch_idx):
        x, y, _ = self._batch(batch)  # x: a degraded-domain sample, y: an unrelated clean-domain sample
        cfg = self.cfg
        g_e, g_b, d_e, d_b = self.net, self.gen_b, self.disc_e, self.disc_b
        # generators
        _freeze(d_e, d_b, frozen=True)
        y_hat, x_hat = g_e(x), g_b(y)
        g_adv = adversarial_lsgan(d_e(y_hat), True) + adversarial_lsgan(d_b(x_hat), True)
        x_rec, y_rec = g_b(y_hat), g_e(x_hat)
        if self.cycle == "feature":
            cyc = feature_consistency(d_b.forward_features(x_rec), d_b.forward_features(x)) + feature_consistency(
                d_e.forward_features(y_rec), d_e.forward_features(y)
            )
        else:
            cyc = cycle_consistency(x_rec, x) + cycle_consistency(y_rec, y)
        idt = identity_loss(g_e(y), y) + identity_loss(g_b(x), x)
        loss = cfg.adv_weight * g_adv + cfg.cycle_weight * cyc + cfg.identity_weight * idt
        self._check(loss, "the generator loss")
        self._g_step(loss)
        _freeze(d_e, d_b, frozen=False)
        # discriminators
        rng = np.random.default_rng([cfg.seed, int(self.global_step), POOL_WORD])
        y_hat, x_hat = self.pool_e.query(y_hat, rng), self.pool_b.query(x_hat, rng)
        y_hat, x_hat = self._layout(y_hat.detach()), self._layout(x_hat.detach())
        d_loss = (
            adversarial_lsgan(d_e(y), True) + adversarial_lsgan(d_e(y_hat), False)
            + adversarial_lsgan(d_b(x), True) + adversarial_lsgan(d_b(x_hat), False)
        )
        self._check(d_loss, "the discriminator loss")
        self._d_step(d_loss)
        self._end_batch()
        self.log_dict({"train_loss": loss, "d_loss": d_loss, "g_adv": g_adv}, prog_bar=True, on_step=True,
                      on_epoch=False, batch_size=x.shape[0])


GAN_MODULES = {"srgan": SRGANModule, "cyclegan": CycleGANModule}
