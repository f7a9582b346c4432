"""Every restoration method, registered by name.

``MODELS`` holds trainable networks, ``BASELINES`` the classical methods (:mod:`.registry`). Each
module of this folder registers what it defines (``register_model(...)`` after a network class, the
``@baseline(...)`` decorator on a classical method), and this package imports every module of the
folder: a new network is one file here (plus its params.yaml recipe). A model's entry gives the
network class that restores images (the one saved and loaded), the task family it is for
(``denoise``, ``sr``, ``enhance``), the paper it follows, and how it trains:

* ``paired``: supervised on (degraded, clean) pairs (:mod:`medrestore.training.paired`);
* ``srgan``: generator pre-trained on the content loss, then adversarial (:mod:`medrestore.training.gan`);
* ``cyclegan``: two generators and two discriminators on unpaired samples; ``options["cycle"]`` is
  ``"feature"`` (Zhao2019's feature-consistency loss) or ``"image"`` (the image-level cycle loss).

Several names share a network: ``dncnn``, ``dncnn-green`` and ``dncnn-blind`` differ in their loss and
training data (params.yaml), ``srresnet`` and ``srgan`` in their training, ``cyclegan`` and
``cyclegan-fc`` in their cycle loss.

``chain`` (:mod:`medrestore.models.chain`) is not trained by name: it saves Hayee2017's pipeline (a
trained denoiser, a bicubic reduction, a super-resolution network trained on its outputs) as one
model; ``train.chains`` in params.yaml builds it.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from medrestore.core.io import InputError, atomic_path, write_json_atomic
from medrestore.models.registry import BASELINES, MODELS, TRAINERS, ModelSpec, baseline, register_model

# every module of this folder, in name order: each registers its networks and baselines on import
# (medrestore.pipeline.deps counts the whole folder as imported, for this call)
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")


def build_model(name: str, **kwargs: Any) -> nn.Module:
    if name == "chain":  # several saved networks in a row (medrestore.models.chain); built by the train stage
        from medrestore.models.chain import Chain

        return Chain(**kwargs)
    if name not in MODELS:
        raise InputError(f"unknown model {name!r}. Fix: use one of {', '.join(MODELS)}.")
    return MODELS[name].cls(**kwargs)


def build_discriminator(name: str, **kwargs: Any) -> nn.Module:
    """The discriminator a GAN model trains against (not saved with the model)."""
    spec = MODELS[name]
    if spec.discriminator is None:
        raise InputError(f"model {name!r} has no discriminator; only GAN models "
                         f"({', '.join(n for n, s in MODELS.items() if s.discriminator)}) do.")
    return spec.discriminator(**kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def save_model(model: nn.Module, out_dir: Path, *, name: str, kwargs: dict, extra: dict | None = None) -> None:
    """``model.safetensors`` (weights, no pickle) and ``model.json`` (how to rebuild it)."""
    out_dir = Path(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out_dir / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"model": name})
        os.chmod(tmp, 0o644)  # safetensors may recreate the file with the process umask
    write_json_atomic(out_dir / "model.json",
                      {"model": name, "kwargs": kwargs, "parameters": count_parameters(model), **(extra or {})})


def load_model(path: Path) -> tuple[nn.Module, dict]:
    """Load a model folder (or its ``model.safetensors``) saved by :func:`save_model`."""
    path = Path(path)
    folder = path.parent if path.suffix == ".safetensors" else path
    meta_path = folder / "model.json"
    if not meta_path.is_file():
        raise InputError(f"{folder}: no model.json beside the weights. Fix: pass a folder written by the train stage.")
    meta = json.loads(meta_path.read_text())
    model = build_model(meta["model"], **meta.get("kwargs", {}))
    try:
        state = load_file(str(folder / "model.safetensors"))
    except Exception as exc:  # safetensors raises its own error types
        raise InputError(
            f"{folder / 'model.safetensors'}: cannot load weights ({exc}). Fix: retrain the model."
        ) from exc
    model.load_state_dict(state)
    return model.eval(), meta


__all__ = ["BASELINES", "MODELS", "TRAINERS", "ModelSpec", "baseline", "build_discriminator", "build_model",
           "count_parameters", "load_model",
           "register_model", "save_model"]
