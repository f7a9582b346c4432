"""The prepare stage: FOV detection, crop and resize of every source image."""

from __future__ import annotations

from pathlib import Path

from medrestore.data.fov import prepare_arrays
from medrestore.data.sources import load_mask
from medrestore.io import InputError, read_image, write_json_atomic, write_png_atomic


def safe_name(image_id: str) -> str:
    """File-name form of an image id (``chase_db1/Image_01L`` -> ``chase_db1__Image_01L``)."""
    return image_id.replace("/", "__").replace("#", "--")


def prepare_sources(manifest: dict, sources_dir: Path, out_dir: Path, *, size: int, mode: str, fov_threshold: float) -> dict:
    """Write ``images/``, ``fov/`` and ``vessels/`` PNGs plus ``manifest.json`` under ``out_dir``."""
    out_dir = Path(out_dir)
    entries = []
    for rec in manifest["images"]:
        src = Path(sources_dir) / rec["image"]
        image = read_image(src, "RGB")
        if min(image.shape[:2]) < 32:
            raise InputError(f"{src}: image is {image.shape[1]}x{image.shape[0]}, too small to restore. Fix: remove it.")
        vessels = load_mask(Path(sources_dir) / rec["vessels"]) if rec.get("vessels") else None
        image, fov, vessels = prepare_arrays(image, vessels, size=size, mode=mode, fov_threshold=fov_threshold)
        if fov.mean() < 0.05:
            raise InputError(
                f"{src}: the detected field of view covers {100 * fov.mean():.1f}% of the image. "
                "Fix: check the image, or lower prepare.fov_threshold."
            )
        name = safe_name(rec["id"])
        entry = {
            "id": rec["id"],
            "dataset": rec["dataset"],
            "image": f"images/{name}.png",
            "fov": f"fov/{name}.png",
            "vessels": f"vessels/{name}.png" if vessels is not None else None,
            "fov_fraction": round(float(fov.mean()), 6),
        }
        write_png_atomic(out_dir / entry["image"], image)
        write_png_atomic(out_dir / entry["fov"], fov.astype("uint8") * 255)
        if vessels is not None:
            write_png_atomic(out_dir / entry["vessels"], vessels.astype("uint8") * 255)
        entries.append(entry)
    result = {"size": size, "mode": mode, "images": entries}
    write_json_atomic(out_dir / "manifest.json", result)
    return result
