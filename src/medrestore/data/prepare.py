"""The prepare stage: FOV (the dataset's own mask, or detected), crop and resize of every source image.

Every source image keeps its id and dataset, its vessel masks (both observers' where the dataset
has two) and its FOV mask; ``manifest.json`` records where each FOV came from. With ``grey`` the
images are stored as grey levels in three equal channels, so every later stage still sees
H x W x 3 uint8 (the corrupt stage degrades one channel and copies it, see
:mod:`medrestore.data.corrupt`).
"""

from __future__ import annotations

from pathlib import Path

from medrestore.core.io import InputError, read_image, write_json_atomic, write_png_atomic
from medrestore.data.fov import MODES, detect_fov, prepare_arrays, to_grey_rgb
from medrestore.data.names import safe_name
from medrestore.data.sources import load_mask

MIN_SOURCE_SIDE = 32


def _mask(sources_dir: Path, rel: str | None, image_shape, what: str):
    if not rel:
        return None
    path = Path(sources_dir) / rel
    mask = load_mask(path)
    if mask.shape != image_shape[:2]:
        raise InputError(
            f"{path}: the {what} mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
            f"{image_shape[1]}x{image_shape[0]}. Fix: replace it with the dataset's original mask."
        )
    return mask


def prepare_sources(
    manifest: dict,
    sources_dir: Path,
    out_dir: Path,
    *,
    size: int,
    mode: str,
    fov_threshold: float,
    grey: bool = False,
) -> dict:
    """Write ``images/``, ``fov/``, ``vessels/`` (and ``vessels_2nd/``) PNGs plus ``manifest.json`` under
    ``out_dir``."""
    if mode not in MODES:
        raise InputError(f"params.yaml: prepare.mode is {mode!r}. Fix: use one of {', '.join(MODES)}.")
    if int(size) < MIN_SOURCE_SIDE:
        raise InputError(f"params.yaml: prepare.size is {size}. Fix: use at least {MIN_SOURCE_SIDE}.")
    out_dir = Path(out_dir)
    entries = []
    for rec in manifest["images"]:
        src = Path(sources_dir) / rec["image"]
        image = read_image(src, "RGB")
        if min(image.shape[:2]) < MIN_SOURCE_SIDE:
            raise InputError(f"{src}: image is {image.shape[1]}x{image.shape[0]}, too small to restore. Fix: remove "
                             "it.")
        vessels = _mask(sources_dir, rec.get("vessels"), image.shape, "vessel")
        vessels_2nd = _mask(sources_dir, rec.get("vessels_2nd"), image.shape, "second observer's vessel")
        shipped = _mask(sources_dir, rec.get("fov"), image.shape, "FOV")
        full_fov = shipped if shipped is not None else detect_fov(image, fov_threshold)
        try:
            out, fov, ves = prepare_arrays(image, vessels, size=size, mode=mode, fov=full_fov)
            ves2 = None
            if vessels_2nd is not None:
                ves2 = prepare_arrays(image, vessels_2nd, size=size, mode=mode, fov=full_fov)[2]
        except ValueError as exc:
            raise InputError(f"{src}: {exc}. Fix: lower prepare.size, pick another prepare.mode, or remove the "
                             "image.") from exc
        if fov.mean() < 0.05:
            where = "shipped FOV mask" if shipped is not None else "detected field of view"
            raise InputError(
                f"{src}: the {where} covers {100 * fov.mean():.1f}% of the image. "
                "Fix: check the image, or lower prepare.fov_threshold."
            )
        if grey:
            out = to_grey_rgb(out)
        name = safe_name(rec["id"])
        entry = {
            "id": rec["id"],
            "dataset": rec["dataset"],
            "subject": rec.get("subject") or rec["id"],
            "image": f"images/{name}.png",
            "fov": f"fov/{name}.png",
            "fov_source": "shipped" if shipped is not None else "detected",
            "vessels": f"vessels/{name}.png" if ves is not None else None,
            "vessels_2nd": f"vessels_2nd/{name}.png" if ves2 is not None else None,
            "fov_fraction": round(float(fov.mean()), 6),
        }
        write_png_atomic(out_dir / entry["image"], out)
        write_png_atomic(out_dir / entry["fov"], fov.astype("uint8") * 255)
        if ves is not None:
            write_png_atomic(out_dir / entry["vessels"], ves.astype("uint8") * 255)
        if ves2 is not None:
            write_png_atomic(out_dir / entry["vessels_2nd"], ves2.astype("uint8") * 255)
        entries.append(entry)
    result = {"size": size, "mode": mode, "grey": bool(grey), "images": entries}
    write_json_atomic(out_dir / "manifest.json", result)
    return result
