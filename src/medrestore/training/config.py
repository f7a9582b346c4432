"""What one training run is: :class:`TrainConfig`, and the optimiser and learning-rate schedule it names."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

SCHEDULES = ("cosine", "inverse_time", "constant", "linear_decay", "step")
OPTIMIZERS = ("adam", "sgd")


@dataclass
class TrainConfig:
    model: str
    model_kwargs: dict = field(default_factory=dict)
    loss: str = "mse"
    loss_kwargs: dict = field(default_factory=dict)
    # optimiser
    optimizer: str = "adam"  # adam | sgd
    lr: float = 1e-3
    betas: tuple[float, float] | list[float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.9  # sgd
    weight_decay: float = 0.0
    schedule: str = "cosine"  # one of SCHEDULES
    lr_decay: float = 0.0  # inverse_time: lr / (1 + lr_decay * step) (Keras' "decay")
    lr_min: float = 1e-5  # cosine floor
    lr_milestones: list[float] = field(default_factory=lambda: [0.5])  # step: fractions of max_steps
    lr_gamma: float = 0.1  # step: factor at each milestone
    warmup_steps: int = 0  # > 0: the rate rises linearly from lr / warmup_steps over these first steps
    # a trained model folder (artifacts/models/TASK/METHOD) whose weights start the network: fine-tuning
    # (Hayee2017 fine-tuned DnCNN from pre-trained weights); "" = from scratch
    init_from: str = ""
    # length and checks
    batch_size: int = 32
    max_steps: int = 200
    epochs: float = 0  # > 0: max_steps = epochs x (batches per pass over the training patches)
    val_every: int = 50
    val_patches: int = 0  # > 0: validate on this many patches, evenly spaced over the validation set; 0 = all
    early_stop_patience: int = 0  # validation checks without improvement; 0 = off
    seed: int = 0
    # devices
    accelerator: str = "cpu"
    devices: int | str = 1
    num_nodes: int = 1  # machines; DDP world size = devices x num_nodes (torchrun or a cluster launcher)
    strategy: str = "auto"
    precision: str = "32-true"
    augment: bool = True
    # paired models: the loss and the validation PSNR count only the pixels inside the field of view
    # (patchify's {split}_fov.npy), as the evaluation does; patches may then cross the FOV's edge
    fov_loss: bool = False
    progress_bar: bool = True
    ckpt_every: int = 100
    channels_last: bool = True  # measured faster for 3x3 convs on CPU (see README, performance)
    # extra perceptual term: {backbone: vgg19 | vessel | discriminator, weight, path, layers, criterion}
    perceptual: dict = field(default_factory=dict)
    # GANs (srgan, cyclegan, cyclegan-fc)
    disc_kwargs: dict = field(default_factory=dict)
    disc_lr: float = 0.0  # 0: same as lr
    pretrain_steps: int = 0  # srgan: content loss only for these steps, then adversarial
    pretrain_epochs: float = 0  # > 0: pretrain_steps from epochs, as max_steps from epochs
    adv_weight: float = 1.0  # srgan: 1e-3 (Hayee2017); cyclegan: 1 (Zhao2019)
    cycle_weight: float = 10.0  # cyclegan: image or feature cycle term (Zhao2019: 10)
    identity_weight: float = 10.0  # cyclegan: identity term (Zhao2019: 10)
    pool_size: int = 0  # cyclegan: the discriminators also see up to this many earlier generated images (CycleGAN: 50); 0 = none (Zhao2019)

    @classmethod
    def from_params(cls, params: dict) -> TrainConfig:
        """The config of ``params``; an unknown key is an error (a typo would otherwise train with a default)."""
        unknown = sorted(set(params) - set(cls.__dataclass_fields__))
        if unknown:
            from medrestore.io import InputError

            raise InputError(f"training settings: unknown key(s) {', '.join(unknown)}. Fix: correct the spelling "
                             f"(the keys are TrainConfig's fields: {', '.join(cls.__dataclass_fields__)}).")
        return cls(**params)

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def make_optimizer(params: Iterable[torch.nn.Parameter], cfg: TrainConfig, lr: float | None = None) -> torch.optim.Optimizer:
    lr = cfg.lr if lr is None else lr
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}: {', '.join(OPTIMIZERS)}")


def lr_factor(cfg: TrainConfig) -> Callable[[int], float]:
    """The multiplier of ``cfg.lr`` at each step (a ``LambdaLR`` function): the schedule's, times a
    linear warm-up over the first ``cfg.warmup_steps`` steps when that is set."""
    base = _schedule_factor(cfg)
    warm = int(cfg.warmup_steps)
    if warm <= 0:
        return base
    return lambda s: base(s) * min(1.0, (s + 1) / warm)


def cosine_factor(floor: float, n: int) -> Callable[[int], float]:
    """Half a cosine from 1 at step 0 down to ``floor`` at step ``n`` (``floor`` after it): the
    multiplier of the base rate, for ``LambdaLR``. Shared by the restoration runs (``schedule:
    cosine``) and the vessel segmenter (:mod:`medrestore.training.segmenter`)."""
    return lambda s: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(s, n) / n))


def _schedule_factor(cfg: TrainConfig) -> Callable[[int], float]:
    n = max(cfg.max_steps, 1)
    if cfg.schedule == "cosine":
        return cosine_factor(min(cfg.lr_min / cfg.lr, 1.0), n)
    if cfg.schedule == "inverse_time":
        return lambda s: 1.0 / (1.0 + cfg.lr_decay * s)
    if cfg.schedule == "constant":
        return lambda s: 1.0
    if cfg.schedule == "linear_decay":  # CycleGAN: constant for the first half, then linearly to 0
        half = n // 2
        return lambda s: 1.0 if s < half else max(0.0, 1.0 - (s - half) / max(n - half, 1))
    if cfg.schedule == "step":  # Ledig / Lai: multiply by lr_gamma at each milestone
        marks = sorted(int(round(m * n)) for m in cfg.lr_milestones)
        return lambda s: cfg.lr_gamma ** sum(s >= m for m in marks)
    raise ValueError(f"unknown schedule {cfg.schedule!r}: {', '.join(SCHEDULES)}")


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(cfg))
