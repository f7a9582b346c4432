"""Apply a trained model to one's own images: ``medrestore restore``.

Images of any size are restored tile by tile (``medrestore.inference``), on the GPU when there is
one. The output keeps the input's format and bit depth (8- or 16-bit PNG/TIFF, JPEG at quality 95)
and its alpha channel. For fundus photographs only the field of view is restored
(``fov="auto"``): the black surround is copied from the input, so a model never paints noise or
texture where the camera saw nothing.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from medrestore.data.fov import detect_fov
from medrestore.inference import restore_array
from medrestore.io import InputError, open_image, workspace_root, write_bytes_atomic
from medrestore.models import load_model

FORMATS = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}


def resolve_model(spec: str, root: Path | None = None) -> Path:
    """A model folder from a path (folder or ``model.safetensors``), ``TASK/MODEL`` or ``MODEL``.

    Names are looked up under ``artifacts/models`` of the repository."""
    path = Path(spec)
    if path.exists():
        return path.parent if path.is_file() else path
    models = Path(root or workspace_root()) / "artifacts" / "models"
    if "/" in spec:
        cand = models / spec
        if (cand / "model.json").is_file():
            return cand
    else:
        found = sorted(p.parent for p in models.glob(f"*/{spec}/model.json"))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            options = ", ".join(f"{p.parent.name}/{p.name}" for p in found)
            raise InputError(f"model {spec!r} was trained for several tasks ({options}). Fix: pass TASK/{spec}.")
    trained = sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in models.glob("*/*/model.json"))
    raise InputError(
        f"{spec}: no such model folder or trained model. Fix: pass a folder written by the train stage"
        + (f", or one of: {', '.join(trained)}." if trained else " (none is trained yet: run `dvc repro`).")
    )


@dataclass
class NativeImage:
    """Pixels as float32 H x W x C in [0, 1] plus what is needed to write them back the same way."""

    pixels: np.ndarray
    alpha: np.ndarray | None
    bits: int
    grey: bool
    format: str


def read_native(path: Path) -> NativeImage:
    path = Path(path)
    fix = "Fix: re-export it as an 8- or 16-bit PNG, JPEG or TIFF."
    if not path.is_file():
        raise InputError(f"{path}: no such file. Fix: check the path.")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes). {fix}")
    colour16 = _read_colour16(path)
    if colour16 is not None:
        return colour16
    try:
        with open_image(path) as img:
            img.load()
            fmt = img.format or FORMATS.get(path.suffix.lower(), "PNG")
            mode = img.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.float64)
                return NativeImage((arr / 65535.0).clip(0, 1).astype(np.float32)[..., None], None, 16, True, fmt)
            if mode == "F":
                raise InputError(f"{path}: a floating-point image; restoration needs 8- or 16-bit pixels. {fix}")
            alpha = None
            if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                alpha = np.asarray(rgba)[..., 3].copy()
                img = rgba.convert("RGB")
            grey = img.mode in ("L", "1")
            arr = np.asarray(img.convert("L" if grey else "RGB"), dtype=np.float32) / 255.0
            return NativeImage(arr[..., None] if grey else arr, alpha, 8, grey, fmt)
    except InputError:
        raise
    except UnidentifiedImageError as exc:
        raise InputError(f"{path}: not an image format that can be read. {fix}") from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: the image cannot be decoded ({exc}). {fix}") from exc


def _read_colour16(path: Path) -> NativeImage | None:
    """16-bit colour PNG/TIFF, which Pillow silently reduces to 8 bits; OpenCV keeps them."""
    if path.suffix.lower() not in (".png", ".tif", ".tiff"):
        return None
    import cv2

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3:
        return None
    alpha = None
    if arr.shape[2] == 4:
        alpha = np.round(arr[..., 3] / 257.0).astype(np.uint8)
    rgb = arr[..., 2::-1].astype(np.float32) / 65535.0
    return NativeImage(rgb, alpha, 16, False, "TIFF" if path.suffix.lower() != ".png" else "PNG")


def encode_native(img: NativeImage) -> bytes:
    """Encode restored pixels in the input's format and bit depth (no timestamps: reproducible bytes)."""
    px = img.pixels.clip(0, 1)
    if img.bits == 16 and not img.grey:
        import cv2

        bgr = np.round(px[..., ::-1] * 65535.0).astype(np.uint16)
        ok, buf = cv2.imencode(".tif" if img.format == "TIFF" else ".png", np.ascontiguousarray(bgr))
        if not ok:
            raise InputError("could not encode a 16-bit colour image. Fix: write PNG output.")
        return buf.tobytes()
    if img.bits == 16:
        pil = Image.fromarray(np.round(px[..., 0] * 65535.0).astype(np.uint16))
    else:
        u8 = np.round(px * 255.0).astype(np.uint8)
        pil = Image.fromarray(u8[..., 0] if img.grey else u8)
        if img.alpha is not None:
            pil = pil.convert("LA" if img.grey else "RGBA")
            pil.putalpha(Image.fromarray(img.alpha))
    fmt = img.format if img.format in ("PNG", "TIFF", "JPEG", "BMP") else "PNG"
    if fmt == "JPEG" and pil.mode in ("RGBA", "LA", "I;16"):
        fmt = "PNG"
    buf = io.BytesIO()
    pil.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def model_channels(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
    raise InputError("the model has no convolution layer to read its input channels from. Fix: use a model written by the train stage.")


def restore_image(
    model: nn.Module, img: NativeImage, path: Path, *, fov: str = "auto", tile: int = 512, overlap: int = 32, device: str = "cpu",
    precision: str = "float32",
) -> NativeImage:
    """Restore one image read by :func:`read_native`."""
    want = model_channels(model)
    have = img.pixels.shape[2]
    if want == have:
        x = img.pixels
    elif want == 3 and have == 1:
        x = np.repeat(img.pixels, 3, axis=2)  # a grey image through an RGB model; averaged back below
    elif want == 1 and have == 3:
        raise InputError(
            f"{path}: a colour image, but the model takes 1-channel (greyscale) input. "
            "Fix: convert the image to greyscale, or use a model trained on colour images."
        )
    else:
        raise InputError(f"{path}: {have} channels, the model takes {want}. Fix: use a model trained on {have}-channel images.")
    out = restore_array(model, np.ascontiguousarray(x, dtype=np.float32), tile=tile, overlap=overlap, device=device, precision=precision)
    if want == 3 and have == 1:
        out = out.mean(axis=2, keepdims=True)
    if out.shape[:2] == img.pixels.shape[:2] and fov == "auto":
        rgb = np.repeat(img.pixels, 3, axis=2) if have == 1 else img.pixels
        mask = detect_fov(np.round(rgb * 255).astype(np.uint8))
        if mask.mean() > 0.05:  # a fundus field of view was found; elsewhere the whole image is restored
            out = np.where(mask[..., None], out, img.pixels)
    alpha = img.alpha
    if alpha is not None and out.shape[:2] != alpha.shape:
        alpha = np.asarray(Image.fromarray(alpha).resize(out.shape[1::-1], Image.Resampling.NEAREST))
    return NativeImage(out.astype(np.float32), alpha, img.bits, img.grey, img.format)


def restore_files(
    model_spec: str,
    inputs: list[str],
    out_dir: Path,
    *,
    fov: str = "auto",
    tile: int = 512,
    overlap: int = 32,
    device: str | None = None,
    precision: str = "float32",
    progress: bool | None = None,
    log=print,
) -> tuple[list[Path], list[str]]:
    """Restore every input into ``out_dir`` (same file name and format). A bad file is reported and
    skipped; the others are still restored. Returns (written files, error messages)."""
    from tqdm.auto import tqdm

    from medrestore.inference import PRECISIONS

    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r}. Fix: use one of {', '.join(PRECISIONS)}.")
    folder = resolve_model(model_spec)
    model, _ = load_model(folder)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    written, errors = [], []
    out_dir = Path(out_dir)
    for name in tqdm(inputs, desc="restoring", unit="image", disable=None if progress is None else not progress):
        path = Path(name)
        try:
            img = read_native(path)
            restored = restore_image(model, img, path, fov=fov, tile=tile, overlap=overlap, device=device, precision=precision)
            dest = out_dir / path.name
            if dest.resolve() == path.resolve():
                raise InputError(f"{path}: the output would overwrite the input. Fix: choose another --out folder.")
            write_bytes_atomic(dest, encode_native(restored))
            written.append(dest)
            log(f"{path} -> {dest}")
        except InputError as exc:
            errors.append(str(exc))
    return written, errors
