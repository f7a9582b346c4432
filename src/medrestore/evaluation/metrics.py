"""Image-quality metrics through pyiqa, plus FOV-masked and green-channel PSNR.

Conventions (the same for every row of every table):
- ``psnr``: RGB PSNR (pyiqa ``psnr``); ``psnr_y``: on Y (pyiqa ``psnry``);
- ``psnr_green``: PSNR of the green channel alone, where fundus vessels have their contrast;
- ``ssim``: SSIM on Y (pyiqa ``ssim``); ``ssim_rgb``: colour SSIM (pyiqa ``ssimc``); pyiqa's
  preprocessing, window (11 px, sigma 1.5), constants and formula, but the Gaussian window is applied
  as two 1-D passes (22 instead of 121 multiply-adds per pixel, in float64 as pyiqa): about 5x
  faster on CPU, within 1e-8 of pyiqa's value (tested); one SSIM map gives the whole-image and the
  FOV value, and Y and RGB go through one filtering call;
- ``*_fov`` (``psnr_fov``, ``psnr_y_fov``, ``psnr_green_fov``, ``ssim_fov``, ``ssim_rgb_fov``): the
  same measure inside the field-of-view mask only. PSNR: the mean squared error over the FOV
  pixels (Y from pyiqa's ``to_y_channel``, as ``psnry``). SSIM: pyiqa's SSIM map (11 px Gaussian
  window, "valid" filtering, as ``ssim``/``ssimc``) averaged over the windows whose centre pixel is
  inside the FOV (colour: and over the three channels). Without a mask they equal the whole-image
  values (tested);
- ``psnr_fov_e3``: ``psnr_fov`` on the FOV eroded by a disk of radius 3 px
  (:data:`FOV_EROSION_PX`; pixels outside the image count as outside the FOV): the FOV's rim, where
  the detected mask and the dark border meet, is left out;
- ``niqe``, ``brisque``: pyiqa's, on Y (lower is better);
- ``entropy``: pyiqa's Shannon entropy of the 8-bit grey histogram (Zhao2019's measure).

All images are uint8 (restored outputs are quantised first, as they would be saved).

Every metric has one entry in :data:`REGISTRY` (full- or no-reference or vessel score, direction,
the report's column title and decimals, whether it is paired-tested, its computation): per_image.csv's
columns, the paired tests, the report's tables and ``metrics.json``, the claims' directions and
``medrestore metrics`` are all read from it. A new metric is one :func:`register_metric` call with its
``compute`` (in this module, or in a module of its own imported before the evaluation runs).

pyiqa downloads NIQE/BRISQUE parameter files on first use. Here they are looked up first in
pyiqa's cache (``$TORCH_HOME/hub/pyiqa``), then in a configured folder (``assets_dir``, default
``../shared/assets/pyiqa``); only if both lack them is pyiqa left to download.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ASSET_FILES = {"niqe": "niqe_modelparameters.mat", "brisque": "brisque_svm_weights.pth"}
DEFAULT_ASSETS = "../shared/assets/pyiqa"


# ============================================================================= the metric registry
FULL, NO, VESSEL = "full", "no", "vessel"


@dataclass(frozen=True)
class Metric:
    """One entry of the metric table (in the manner of pyiqa's ``DEFAULT_CONFIGS``): what the
    evaluation computes and writes, and how the report shows it.

    ``compute`` is the computation: for ``NO``, ``compute(image, assets_dir) -> float``; for ``FULL``,
    ``compute(image, reference, fov, assets_dir) -> float`` (uint8 H x W x 3 arrays, ``fov`` a bool
    mask or None). The built-in full-reference metrics share their work (one SSIM map gives four of
    them) and are computed together by :func:`full_reference` (their ``compute`` is None); the vessel
    scores come from :func:`medrestore.vessels.vessel_scores`."""

    name: str
    # FULL: against the clean image; NO: the image alone; VESSEL: vessel segmentation against a reference
    reference: str
    lower_is_better: bool = False
    # the report's column title ("": the name; VESSEL: followed by the reference, "(vs clean)")
    header: str = ""
    digits: int = 2               # decimals in the report's tables
    paired: bool = False          # tested model against the best baseline (summary.json's ``paired_tests``)
    table: bool = False           # a column of the report's per-task tables
    # FULL: measured inside the field of view only (per_image.csv lists these after the whole-image ones)
    fov: bool = False
    # its key in reports/metrics.json ("": not there); VESSEL: also KEY_indep (independent segmenter)
    headline: str = ""
    compute: Callable[..., float] | None = field(default=None, compare=False, repr=False)


def _pyiqa_no_reference(name: str) -> Callable[[np.ndarray, str | None], float]:
    """pyiqa's no-reference metric ``name`` of a uint8 image (its parameter files from :func:`asset_path`)."""

    def compute(image: np.ndarray, assets_dir: str | None = None) -> float:
        return float(_metric(name, assets_dir)(_tensor(image)))

    compute.__name__ = f"pyiqa_{name}"
    return compute


#: Every metric, in the order the report shows them (and the paired tests list them).
REGISTRY: tuple[Metric, ...] = (
    Metric("psnr", FULL, table=True, paired=True, headline="psnr"),
    Metric("psnr_fov", FULL, fov=True, table=True, paired=True, headline="psnr_fov"),
    Metric("psnr_fov_e3", FULL, fov=True, table=True, headline="psnr_fov_e3"),
    Metric("psnr_y", FULL),
    Metric("psnr_y_fov", FULL, fov=True),
    Metric("psnr_green", FULL, table=True, headline="psnr_green"),
    Metric("psnr_green_fov", FULL, fov=True, paired=True),
    Metric("ssim", FULL, digits=3, table=True, paired=True, headline="ssim"),
    Metric("ssim_fov", FULL, fov=True, digits=3, table=True, paired=True),
    Metric("ssim_rgb", FULL, digits=3),
    Metric("ssim_rgb_fov", FULL, fov=True, digits=3),
    Metric("niqe", NO, lower_is_better=True, table=True, paired=True, headline="niqe",
           compute=_pyiqa_no_reference("niqe")),
    Metric("brisque", NO, lower_is_better=True, table=True, paired=True, headline="brisque",
           compute=_pyiqa_no_reference("brisque")),
    Metric("entropy", NO, table=True, compute=_pyiqa_no_reference("entropy")),
    Metric("auc", VESSEL, header="vessel AUC", digits=3, table=True, paired=True),
    Metric("dice", VESSEL, header="vessel Dice", digits=3, table=True, paired=True),
    Metric("thin_recall", VESSEL, header="thin-vessel recall", digits=3, paired=True),
    Metric("thin_recall_above_chance", VESSEL, header="thin vessels kept", digits=3, table=True, headline="thin_kept"),
    Metric("invented_rate", VESSEL, lower_is_better=True, header="vessels invented", digits=3, table=True, paired=True,
           headline="invented"),
)

#: The references of the vessel scores: column prefix and the words the report's headers add.
#: ``ref_``: the segmenter's output on the clean image; ``manual_``: the dataset's manual mask;
#: ``indep_``: the manual mask too, but scored by the independent segmenter (another seed, trained on
#: the second observer's masks: ``train_scoring_segmenter``), never the one a vessel-aware loss uses.
VESSEL_REFERENCES = (("ref", "vs clean"), ("manual", "vs manual"), ("indep", "vs manual, independent segmenter"))

#: The metric that picks "the best": the classical baseline the models are paired against, the best
#: method of each test corruption in the report and the model registered as the task's best.
BEST_BY = "psnr_fov"


def _columns() -> dict[str, Metric]:
    """Column name -> entry: image metrics under their names, vessel metrics once per reference."""
    out = {m.name: m for m in REGISTRY if m.reference != VESSEL}
    for prefix, words in VESSEL_REFERENCES:
        for m in REGISTRY:
            if m.reference == VESSEL:
                # the independent scores are compared model by model in the vessel-aware section, not
                # against the best baseline (the paired tests stay on the pipeline's segmenter)
                out[f"{prefix}_{m.name}"] = dataclasses.replace(m, name=f"{prefix}_{m.name}",
                                                                header=f"{m.header} ({words})",
                                                                paired=m.paired and prefix != "indep")
    return out


def _derive() -> None:
    """The views of :data:`REGISTRY` below, (re)computed from it (at import and by :func:`register_metric`).
    Read them as attributes of this module (``metrics.COLUMNS``) where a metric may be registered later."""
    g = globals()
    g["METRICS"] = _columns()
    g["FULL_REFERENCE"] = tuple(m.name for m in REGISTRY if m.reference == FULL and not m.fov) + tuple(
        m.name for m in REGISTRY if m.reference == FULL and m.fov)
    g["NO_REFERENCE"] = tuple(m.name for m in REGISTRY if m.reference == NO)
    g["VESSEL_KEYS"] = tuple(m.name for m in REGISTRY if m.reference == VESSEL)
    g["VESSEL_COLUMNS"] = tuple(f"{prefix}_{k}" for prefix, _ in VESSEL_REFERENCES for k in g["VESSEL_KEYS"])
    g["COLUMNS"] = g["FULL_REFERENCE"] + g["NO_REFERENCE"] + g["VESSEL_COLUMNS"]
    g["PAIRED"] = tuple(name for name, m in g["METRICS"].items() if m.paired)
    g["TABLE_IMAGE"] = tuple(m.name for m in REGISTRY if m.reference != VESSEL and m.table)
    g["TABLE_VESSEL"] = tuple(m.name for m in REGISTRY if m.reference == VESSEL and m.table)
    g["LOWER_IS_BETTER"] = frozenset(name for name, m in g["METRICS"].items() if m.lower_is_better)


#: Every column of per_image.csv that holds a metric (image metrics, ``ref_*`` then ``manual_*``).
METRICS: dict[str, Metric] = {}  # filled by _derive() below, as are the views that follow
FULL_REFERENCE: tuple[str, ...]
NO_REFERENCE: tuple[str, ...]
VESSEL_KEYS: tuple[str, ...]
VESSEL_COLUMNS: tuple[str, ...]
#: per_image.csv's metric columns, in their order.
COLUMNS: tuple[str, ...]
#: The columns tested model against baseline, in summary.json's order.
PAIRED: tuple[str, ...]
#: The image metrics and vessel metrics (without their reference prefix) of the report's tables.
TABLE_IMAGE: tuple[str, ...]
TABLE_VESSEL: tuple[str, ...]
LOWER_IS_BETTER: frozenset[str]
_derive()


def register_metric(entry: Metric) -> Metric:
    """Add ``entry`` to :data:`REGISTRY` (after the metrics of its kind there) and refresh every view of
    it: the evaluation computes it, per_image.csv and summary.json hold it, the report shows it as its
    flags say. ``FULL`` and ``NO`` metrics must carry their ``compute``; a ``VESSEL`` key must be one
    that :func:`medrestore.vessels.vessel_scores` returns."""
    global REGISTRY
    if entry.reference not in (FULL, NO, VESSEL):
        raise ValueError(f"metric {entry.name!r}: reference is {entry.reference!r}. Fix: one of {FULL!r}, {NO!r}, "
                         f"{VESSEL!r}.")
    if any(m.name == entry.name for m in REGISTRY) or entry.name in METRICS:
        raise ValueError(f"metric {entry.name!r} is registered already. Fix: give the new metric another name.")
    if entry.reference in (FULL, NO) and entry.compute is None:
        raise ValueError(f"metric {entry.name!r}: no compute. Fix: pass compute=FUNCTION (see Metric).")
    last = max((i for i, m in enumerate(REGISTRY) if m.reference == entry.reference), default=len(REGISTRY) - 1)
    REGISTRY = REGISTRY[: last + 1] + (entry,) + REGISTRY[last + 1:]
    _derive()
    return entry


def headline() -> dict[str, tuple[str, ...]]:
    """``reports/metrics.json``'s numbers: key -> the per_image columns it is read from (the first one a
    method's statistics hold). Image metrics under their ``headline`` key; a vessel metric's key is read
    against the manual mask, else the clean image, and ``KEY_indep`` from the independent segmenter."""
    out: dict[str, tuple[str, ...]] = {m.headline: (m.name,) for m in REGISTRY if m.headline and m.reference != VESSEL}
    vessel = [m for m in REGISTRY if m.headline and m.reference == VESSEL]
    out.update({m.headline: (f"manual_{m.name}", f"ref_{m.name}") for m in vessel})
    out.update({f"{m.headline}_indep": (f"indep_{m.name}",) for m in vessel})
    return out


def headline_key(variant: str, name: str) -> str:
    """The MLflow metric a trained model's test score is logged under: ``test_<variant>_<name>``
    (``test_s25_psnr_fov``; a test corruption's characters other than letters, digits and ``_`` become
    ``_``: ``x4-s25`` gives ``test_x4_s25_psnr_fov``), a plain name that a filter string takes unquoted."""
    import re

    return f"test_{re.sub(r'[^A-Za-z0-9_]', '_', variant)}_{name}"


def headline_scores(summary: dict, method: str) -> dict[str, float]:
    """A method's :func:`headline` numbers on each test corruption of an evaluation's ``summary.json``
    (the mean over the test images), under :func:`headline_key`; non-finite means are left out."""
    import math

    out: dict[str, float] = {}
    for variant, stats in sorted(summary["methods"].get(method, {}).items()):
        for name, columns in headline().items():
            col = next((c for c in columns if isinstance(stats.get(c), dict) and "mean" in stats[c]), None)
            if col is not None and stats[col]["mean"] is not None and math.isfinite(stats[col]["mean"]):
                out[headline_key(variant, name)] = float(stats[col]["mean"])
    return out


def metric(name: str) -> Metric:
    """The registry entry of a column name (``psnr_fov``, ``manual_dice``)."""
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(
            f"metric {name!r} is not in medrestore.evaluation.metrics.REGISTRY. Fix: add an entry there."
        ) from None


def header(name: str) -> str:
    """The report's column title of a metric."""
    return metric(name).header or name


def digits(name: str) -> int:
    """Decimals the report shows of a metric."""
    return metric(name).digits


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


@functools.cache
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


#: The radius (px) of the disk ``psnr_fov_e3`` erodes the FOV with.
FOV_EROSION_PX = 3


def eroded_fov(mask: np.ndarray, radius: int = FOV_EROSION_PX) -> np.ndarray:
    """``mask`` eroded by a disk of ``radius`` px (pixels outside the image count as outside)."""
    from scipy.ndimage import binary_erosion
    from skimage.morphology import disk

    return binary_erosion(np.asarray(mask, bool), structure=disk(radius), border_value=0)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def _luma(x: torch.Tensor) -> np.ndarray:
    """pyiqa's Y (YIQ luma, [0, 1]) of a 1 x 3 x H x W tensor, as ``psnry`` computes it."""
    from pyiqa.utils.color_util import to_y_channel

    return to_y_channel(x, 1.0, "yiq")[0, 0].double().numpy()


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The 1-D factor of pyiqa's ``fspecial(size, sigma)`` window (normalised to sum 1), float64."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def ssim_map(a: torch.Tensor, b: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """pyiqa's SSIM map (``pyiqa.archs.ssim_arch.ssim``: "valid" filtering, non-negative contrast-
    structure term) of two float64 N x C x H x W tensors, with the Gaussian window applied separably."""
    c = a.shape[1]
    g = _gaussian_1d()
    rows, cols = g.view(1, 1, 1, -1).repeat(c * 5, 1, 1, 1), g.view(1, 1, -1, 1).repeat(c * 5, 1, 1, 1)
    stack = torch.cat([a, b, a * a, b * b, a * b], dim=1)
    filtered = torch.nn.functional.conv2d(torch.nn.functional.conv2d(stack, rows, groups=5 * c), cols, groups=5 * c)
    mu1, mu2, xx, yy, xy = filtered.split(c, dim=1)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    cs = torch.relu((2 * (xy - mu1_mu2) + c2) / ((xx - mu1_sq) + (yy - mu2_sq) + c2))
    return ((2 * mu1_mu2 + c1) / (mu1_sq + mu2_sq + c1)) * cs


def _ssim_whole_and_fov(x: torch.Tensor, y: torch.Tensor, mask: np.ndarray) -> dict[str, float]:
    """SSIM on Y (pyiqa ``ssim``) and on RGB (``ssimc``), each over the whole image and over the
    windows centred inside ``mask`` (see the module docstring), from one filtering call."""
    from pyiqa.archs.func_util import preprocess_rgb

    a = torch.cat([preprocess_rgb(x, True, 255, "yiq"), preprocess_rgb(x, False, 255, "yiq")], dim=1).to(torch.float64)
    b = torch.cat([preprocess_rgb(y, True, 255, "yiq"), preprocess_rgb(y, False, 255, "yiq")], dim=1).to(torch.float64)
    smap = ssim_map(a, b)[0]  # (1 + 3) x (H - 10) x (W - 10)
    k = (mask.shape[0] - smap.shape[-2]) // 2
    inner = torch.from_numpy(np.ascontiguousarray(mask[k : k + smap.shape[-2], k : k + smap.shape[-1]]))
    out = {}
    for key, part in (("ssim", smap[:1]), ("ssim_rgb", smap[1:])):
        out[key] = float(part.mean())
        out[f"{key}_fov"] = float(part[:, inner].mean()) if inner.any() else float("nan")
    return out


@torch.inference_mode()
def full_reference(image: np.ndarray, reference: np.ndarray, fov: np.ndarray | None = None,
                   assets_dir: str | None = None,
                   *, exact_psnr: bool = False) -> dict[str, float]:
    """Every full-reference metric. ``psnr`` and ``psnr_y`` are pyiqa's, which adds 1e-8 to the MSE
    (on [0, 1]: PSNR capped at 80 dB, within 0.001 dB of the exact value below 56 dB); with
    ``exact_psnr`` they follow the rule of the other PSNRs: the exact MSE in float64, infinite when
    it is zero (``medrestore metrics``, where near-identical images are compared)."""
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
    inner = eroded_fov(mask)
    out["psnr_fov_e3"] = _psnr(image[inner], reference[inner]) if inner.any() else float("nan")
    out["psnr_y_fov"] = float("inf") if mse_y == 0 else float(10.0 * np.log10(1.0 / mse_y))
    out["psnr_green_fov"] = _psnr(image[..., 1][mask], reference[..., 1][mask])
    if exact_psnr:
        out["psnr"] = _psnr(image, reference)
        mse_y_all = float(np.mean((ya - yb) ** 2))
        out["psnr_y"] = float("inf") if mse_y_all == 0 else float(10.0 * np.log10(1.0 / mse_y_all))
    out.update(_ssim_whole_and_fov(x, y, mask))
    for m in REGISTRY:
        if m.reference == FULL and m.compute is not None:
            out[m.name] = float(m.compute(image, reference, fov, assets_dir))
    return out


@torch.inference_mode()
def no_reference(image: np.ndarray, assets_dir: str | None = None) -> dict[str, float]:
    """Every no-reference metric of :data:`REGISTRY`, by its ``compute``."""
    return {m.name: float(m.compute(image, assets_dir)) for m in REGISTRY if m.reference == NO}


def all_metrics(image: np.ndarray, reference: np.ndarray | None = None, fov: np.ndarray | None = None,
                assets_dir: str | None = None) -> dict[str, float]:
    out = no_reference(image, assets_dir)
    if reference is not None:
        out.update(full_reference(image, reference, fov, assets_dir))
    return out
