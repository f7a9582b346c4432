"""The training engine: Lightning for every model of the registry.

* :mod:`.config`: :class:`TrainConfig`, optimisers and learning-rate schedules;
* :mod:`.data`: paired / unpaired patch datasets and step-deterministic samplers;
* :mod:`.callbacks`: the curve, atomic checkpoints, the NaN guard;
* :mod:`.paired`: supervised restoration (denoising, deblurring, super-resolution);
* :mod:`.gan`: SRGAN and the two-way GANs of Zhao2019 (manual optimisation);
* :mod:`.engine`: :func:`train_model`, one resumable run from arrays to the stage's outputs.
"""

from medrestore.training.callbacks import (
    AtomicCheckpoint,
    CurveRecorder,
    NonFiniteLossError,
)
from medrestore.training.config import TrainConfig
from medrestore.training.data import (
    PairedPatches,
    StepBatchSampler,
    UnpairedPatches,
    UnpairedStepSampler,
    fingerprint,
)
from medrestore.training.engine import resolve_config, train_model
from medrestore.training.paired import RestorationModule, psnr_per_image

__all__ = [
    "AtomicCheckpoint",
    "CurveRecorder",
    "NonFiniteLossError",
    "PairedPatches",
    "RestorationModule",
    "StepBatchSampler",
    "TrainConfig",
    "UnpairedPatches",
    "UnpairedStepSampler",
    "fingerprint",
    "psnr_per_image",
    "resolve_config",
    "train_model",
]
