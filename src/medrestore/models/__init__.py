"""Every restoration method, registered by name.

``MODELS`` holds trainable networks, ``BASELINES`` the classical methods. A model's entry gives
its class, the task family it is for, and the paper it follows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from safetensors.torch import load_file, save_file
from torch import nn

from medrestore.io import InputError, atomic_path, write_json_atomic
from medrestore.models.cdae import CDAE
from medrestore.models.classical import bm3d_rgb, median_filter, nl_means
from medrestore.models.cyclegan import ResnetGenerator
from medrestore.models.dncnn import DnCNN
from medrestore.models.irunet import IRUNet
from medrestore.models.lapsrn import LapSRN
from medrestore.models.redae import REDAE
from medrestore.models.srresnet import SRResNet


@dataclass(frozen=True)
class ModelSpec:
    cls: type[nn.Module]
    task: str
    paper: str


MODELS: dict[str, ModelSpec] = {
    "cdae": ModelSpec(CDAE, "denoise", "seed 002 (convolutional denoising autoencoder, Gondara 2016)"),
    "redae": ModelSpec(REDAE, "denoise", "seed 000 (autoencoder with symmetric skips, Mao et al. 2016)"),
    "dncnn": ModelSpec(DnCNN, "denoise", "seed 000 (DnCNN-17, Zhang et al. 2017)"),
    "irunet": ModelSpec(IRUNet, "denoise", "seed 004 (IRUNet blind denoiser, Gil Zuluaga et al.)"),
    "lapsrn": ModelSpec(LapSRN, "sr", "seed 001 (LapSRN, Lai et al. 2017; scale=1 for deblurring)"),
    "srresnet": ModelSpec(SRResNet, "sr", "seed 000 (SRGAN generator, Ledig et al. 2017)"),
    "cyclegan": ModelSpec(ResnetGenerator, "enhance", "seed 003 (ResNet-9 generator of the two-way GAN)"),
}

BASELINES: dict[str, Callable[..., Any]] = {
    "median": median_filter,
    "nlmeans": nl_means,
    "bm3d": bm3d_rgb,
}


def build_model(name: str, **kwargs: Any) -> nn.Module:
    if name not in MODELS:
        raise InputError(f"unknown model {name!r}. Fix: use one of {', '.join(MODELS)}.")
    return MODELS[name].cls(**kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def save_model(model: nn.Module, out_dir: Path, *, name: str, kwargs: dict, extra: dict | None = None) -> None:
    """``model.safetensors`` (weights, no pickle) and ``model.json`` (how to rebuild it)."""
    out_dir = Path(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out_dir / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"model": name})
    write_json_atomic(out_dir / "model.json", {"model": name, "kwargs": kwargs, "parameters": count_parameters(model), **(extra or {})})


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
        raise InputError(f"{folder / 'model.safetensors'}: cannot load weights ({exc}). Fix: retrain the model.") from exc
    model.load_state_dict(state)
    return model.eval(), meta


__all__ = ["MODELS", "BASELINES", "build_model", "count_parameters", "save_model", "load_model"]
