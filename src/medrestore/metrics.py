"""Image-quality metrics through pyiqa, plus FOV-masked and green-channel PSNR.

Conventions (the same for every row of every table):
- ``psnr``: RGB PSNR (pyiqa ``psnr``); ``psnr_y``: on Y (pyiqa ``psnry``);
- ``psnr_green``: PSNR of the green channel alone, where fundus vessels have their contrast;
- ``ssim``: SSIM on Y (pyiqa ``ssim``); ``ssim_rgb``: colour SSIM (pyiqa ``ssimc``); both from
  pyiqa's own SSIM function and preprocessing, called once for the whole-image and the FOV value;
- ``*_fov`` (``psnr_fov``, ``psnr_y_fov``, ``psnr_green_fov``, ``ssim_fov``, ``ssim_rgb_fov``): the
  same measure inside the field-of-view mask only. PSNR: the mean squared error over the FOV
  pixels (Y from pyiqa's ``to_y_channel``, as ``psnry``). SSIM: pyiqa's SSIM map (11 px Gaussian
  window, "valid" filtering, as ``ssim``/``ssimc``) averaged over the windows whose centre pixel is
  inside the FOV (colour: and over the three channels). Without a mask they equal the whole-image
  values (tested);
- ``niqe``, ``brisque``: pyiqa's, on Y (lower is better);
- ``entropy``: pyiqa's Shannon entropy of the 8-bit grey histogram (seed 003's measure).

All images are uint8 (restored outputs are quantised first, as they would be saved).

pyiqa downloads NIQE/BRISQUE parameter files on first use. Here they are looked up first in
pyiqa's cache (``$TORCH_HOME/hub/pyiqa``), then in a configured folder (``assets_dir``, default
``../shared/assets/pyiqa``); only if both lack them is pyiqa left to download.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch

ASSET_FILES = {"niqe": "niqe_modelparameters.mat", "brisque": "brisque_svm_weights.pth"}
DEFAULT_ASSETS = "../shared/assets/pyiqa"
FULL_REFERENCE = ("psnr", "psnr_y", "psnr_green", "ssim", "ssim_rgb", "psnr_fov", "psnr_y_fov", "psnr_green_fov", "ssim_fov", "ssim_rgb_fov")
NO_REFERENCE = ("niqe", "brisque", "entropy")
LOWER_IS_BETTER = {"niqe", "brisque"}


def asset_path(metric: str, assets_dir: str | os.PathLike | None = None) -> str | None:
    """Where pyiqa's parameter file for ``metric`` is: its cache, then ``assets_dir``, else None."""
    name = ASSET_FILES[metric]
    cache = Path(torch.hub.get_dir()) / "pyiqa" / name
    if cache.is_file():
        return str(cache)
    folder = Path(assets_dir or os.environ.get("MEDRESTORE_PYIQA_ASSETS", DEFAULT_ASSETS))
    if (folder / name).is_file():
        return str((folder / name).resolve())
    return None


@functools.lru_cache(maxsize=None)
def _metric(name: str, assets_dir: str | None):
    import pyiqa

    kwargs = {}
    if name in ASSET_FILES:
        path = asset_path(name, assets_dir)
        if path is not None:
            kwargs["pretrained_model_path"] = path
    return pyiqa.create_metric(name, device=torch.device("cpu"), **kwargs)


def _tensor(image: np.ndarray) -> torch.Tensor:
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return torch.from_numpy(np.array(image, dtype=np.float32).transpose(2, 0, 1)).div_(255.0)[None]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def _luma(x: torch.Tensor) -> np.ndarray:
    """pyiqa's Y (YIQ luma, [0, 1]) of a 1 x 3 x H x W tensor, as ``psnry`` computes it."""
    from pyiqa.utils.color_util import to_y_channel

    return to_y_channel(x, 1.0, "yiq")[0, 0].double().numpy()


def _ssim_whole_and_fov(x: torch.Tensor, y: torch.Tensor, mask: np.ndarray, *, luma: bool) -> tuple[float, float]:
    """pyiqa's SSIM (``ssim`` with ``luma``, ``ssimc`` without) and its mean over the windows
    centred inside ``mask``, from one SSIM map (see the module docstring)."""
    from pyiqa.archs.func_util import preprocess_rgb
    from pyiqa.archs.ssim_arch import ssim

    a = preprocess_rgb(x, luma, 255, "yiq").to(torch.float64)
    b = preprocess_rgb(y, luma, 255, "yiq").to(torch.float64)
    smap = ssim(a, b, data_range=255, get_ssim_map=True)[0]  # C x (H - 10) x (W - 10)
    k = (mask.shape[0] - smap.shape[-2]) // 2
    inner = torch.from_numpy(np.ascontiguousarray(mask[k : k + smap.shape[-2], k : k + smap.shape[-1]]))
    fov_value = float(smap[:, inner].mean()) if inner.any() else float("nan")
    return float(smap.mean()), fov_value


@torch.inference_mode()
def full_reference(image: np.ndarray, reference: np.ndarray, fov: np.ndarray | None = None, assets_dir: str | None = None) -> dict[str, float]:
    if image.shape != reference.shape:
        raise ValueError(f"image {image.shape} and reference {reference.shape} differ in shape")
    if image.ndim == 2:
        image, reference = (np.repeat(a[..., None], 3, axis=2) for a in (image, reference))
    x, y = _tensor(image), _tensor(reference)
    out = {
        "psnr": float(_metric("psnr", assets_dir)(x, y)),
        "psnr_y": float(_metric("psnry", assets_dir)(x, y)),
        "psnr_green": _psnr(image[..., 1], reference[..., 1]),
    }
    mask = np.ones(image.shape[:2], bool) if fov is None else np.asarray(fov).astype(bool)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"FOV mask {mask.shape} and image {image.shape[:2]} differ in shape")
    ya, yb = _luma(x), _luma(y)
    mse_y = float(np.mean((ya[mask] - yb[mask]) ** 2)) if mask.any() else float("nan")
    out["psnr_fov"] = _psnr(image[mask], reference[mask])
    out["psnr_y_fov"] = float("inf") if mse_y == 0 else float(10.0 * np.log10(1.0 / mse_y))
    out["psnr_green_fov"] = _psnr(image[..., 1][mask], reference[..., 1][mask])
    out["ssim"], out["ssim_fov"] = _ssim_whole_and_fov(x, y, mask, luma=True)
    out["ssim_rgb"], out["ssim_rgb_fov"] = _ssim_whole_and_fov(x, y, mask, luma=False)
    return out


@torch.inference_mode()
def no_reference(image: np.ndarray, assets_dir: str | None = None) -> dict[str, float]:
    x = _tensor(image)
    return {
        "niqe": float(_metric("niqe", assets_dir)(x)),
        "brisque": float(_metric("brisque", assets_dir)(x)),
        "entropy": float(_metric("entropy", assets_dir)(x)),
    }


def all_metrics(image: np.ndarray, reference: np.ndarray | None = None, fov: np.ndarray | None = None, assets_dir: str | None = None) -> dict[str, float]:
    out = no_reference(image, assets_dir)
    if reference is not None:
        out.update(full_reference(image, reference, fov, assets_dir))
    return out
