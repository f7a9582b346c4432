"""Apply a trained model to one's own images: ``medrestore restore``.

Images of any size are restored tile by tile (``medrestore.serving.inference``), on the GPU when there is
one. The output keeps the input's format and bit depth (8- or 16-bit PNG/TIFF, JPEG at quality 95)
and its alpha channel. The whole image is restored (``fov="none"``, the default), as the evaluation
restores the test images, so that what the report measures is what a user gets. ``fov="auto"``
copies the surround of a detected fundus field of view from the input instead (a border with
annotations stays as it was); measured on the 4 CHASE_DB1 test images at sigma 25 with the standard
CDAE: whole-image PSNR 33.95 dB (none) against 28.50 dB (auto, the noisy surround is kept), inside
the FOV 33.07 against 33.01 dB (the FOV detected on a noisy image misses some edge pixels).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError
from torch import nn

from medrestore.core.io import InputError, open_image, workspace_root, write_bytes_atomic
from medrestore.data.fov import detect_fov
from medrestore.models import MODELS, load_model
from medrestore.serving.inference import model_scale, restore_array

FORMATS = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP",
           ".gif": "GIF", ".webp": "WEBP"}
#: Formats written back as they came (an MPO, a camera JPEG with extra pictures, is written as MPO).
WRITABLE = ("PNG", "TIFF", "JPEG", "BMP", "GIF", "WEBP", "MPO")
#: Formats that hold several frames (pages) written back with ``save_all``.
MULTI_FRAME = ("GIF", "PNG", "WEBP", "TIFF", "MPO")
#: Smallest side (pixels) ``restore`` accepts: the pipeline's own smallest source image (prepare);
#: below it every output pixel lies within the reach of the network's zero/replicate padding.
MIN_SIDE = 32
ORIENTATION = 0x0112


def resolve_model(spec: str, root: Path | None = None) -> Path:
    """A model folder from a path (folder or ``model.safetensors``), ``TASK/MODEL``, ``MODEL`` or an
    MLflow model URI (``models:/medrestore-denoise-g25@champion``, ``models:/NAME/VERSION``,
    ``runs:/RUN/model``: downloaded from the tracking store, :func:`medrestore.serving.mlflow_model.model_folder`).

    Names are looked up under ``artifacts/models`` of the repository."""
    if spec.startswith(("models:/", "runs:/")):
        from medrestore.serving.mlflow_model import model_folder

        return model_folder(spec)
    path = Path(spec)
    if path.exists():
        return path.parent if path.is_file() else path
    workspace = Path(root or workspace_root())
    if not (workspace / "dvc.yaml").is_file():
        raise InputError(
            f"{spec}: no such model folder, and {Path.cwd()} is not inside the medrestore repository (no dvc.yaml here "
            "or above), where trained models are looked up by name under artifacts/models. Fix: run the command from "
            "the repository, or pass the path of a model folder (or its model.safetensors)."
        )
    models = workspace / "artifacts" / "models"
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
    """Pixels as float32 H x W x C in [0, 1] plus what is needed to write them back the same way.

    A multi-frame file (animated GIF/PNG/WebP, multi-page TIFF) is its first frame with the others
    in ``frames`` (each a single-frame :class:`NativeImage`), ``durations`` (milliseconds per frame,
    all frames) and ``loop`` (the file's loop count; None: none stored)."""

    pixels: np.ndarray
    alpha: np.ndarray | None
    bits: int
    grey: bool
    format: str
    frames: tuple[NativeImage, ...] = ()
    durations: tuple[int, ...] | None = None
    loop: int | None = None


_FIX = "Fix: re-export it as an 8- or 16-bit PNG, JPEG or TIFF."


def read_native(path: Path) -> NativeImage:
    """Read an image as it is displayed: EXIF/TIFF orientation applied, every frame of a multi-frame file."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: a folder, not an image file. Fix: pass the image files in it (e.g. {path}/*.png).")
    if not path.is_file():
        raise InputError(f"{path}: no such file. Fix: check the path.")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes). {_FIX}")
    _check_header(path)
    colour16 = _read_colour16(path)
    if colour16 is not None:
        return colour16
    try:
        with open_image(path) as img:
            fmt = img.format or FORMATS.get(path.suffix.lower(), "PNG")
            if fmt not in WRITABLE:
                raise InputError(
                    f"{path}: a {fmt} image; restore writes each output in its input's format and cannot write {fmt}. "
                    "Fix: convert it to PNG or TIFF first."
                )
            loop = img.info.get("loop")
            frames, durations = [], []
            for frame in ImageSequence.Iterator(img):
                frame.load()
                durations.append(frame.info.get("duration"))
                frames.append(_native_frame(ImageOps.exif_transpose(frame), fmt, path))
    except InputError:
        raise
    except UnidentifiedImageError as exc:
        kind = _tiff_sample_kind(path)
        if kind == "float":
            raise InputError(f"{path}: a floating-point TIFF; restoration needs 8- or 16-bit pixels. {_FIX}") from exc
        raise InputError(f"{path}: not an image format that can be read. {_FIX}") from exc
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: the image cannot be decoded ({exc}). {_FIX}") from exc
    if len(frames) == 1:
        return frames[0]
    frames = _same_kind(frames, path)
    animated = fmt in ("GIF", "PNG", "WEBP") and any(d is not None for d in durations)
    first = frames[0]
    first.frames = tuple(frames[1:])
    first.durations = tuple(int(d or 0) for d in durations) if animated else None
    first.loop = int(loop) if loop is not None and fmt in ("GIF", "PNG", "WEBP") else None
    return first


def _tiff_pages(path: Path):
    """tifffile's first page of a TIFF (read from its header only), or None for anything else."""
    from medrestore.core.io import _is_tiff

    if not _is_tiff(path):
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            return page.imagewidth, page.imagelength, page.dtype
    except Exception:  # noqa: BLE001 - not a TIFF tifffile parses: the decoders below report it
        return None


def _tiff_sample_kind(path: Path) -> str | None:
    page = _tiff_pages(path)
    if page is None or page[2] is None:
        return None
    return "float" if np.dtype(page[2]).kind == "f" else "int"


def _check_header(path: Path) -> None:
    """Refuse an image above the pixel limit (:func:`medrestore.core.io.max_pixels`) from its header,
    before any decoder (OpenCV's included) allocates its pixels."""
    from medrestore.core.io import check_pixel_limit

    try:
        with open_image(path):
            return
    except InputError:
        raise
    except Exception:  # noqa: BLE001 - Pillow cannot parse it: tifffile's header, else the decoders report it
        page = _tiff_pages(path)
        if page is not None:
            check_pixel_limit(path, page[0], page[1])


def _native_frame(img: Image.Image, fmt: str, path: Path) -> NativeImage:
    """One decoded PIL frame as a :class:`NativeImage`."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        return NativeImage((arr / 65535.0).clip(0, 1).astype(np.float32)[..., None], None, 16, True, fmt)
    if mode == "F":
        raise InputError(f"{path}: a floating-point image; restoration needs 8- or 16-bit pixels. {_FIX}")
    alpha = None
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        alpha = np.asarray(rgba)[..., 3].copy()
        img = rgba.convert("RGB")
    grey = img.mode in ("L", "1")
    arr = np.asarray(img.convert("L" if grey else "RGB"), dtype=np.float32) / 255.0
    return NativeImage(arr[..., None] if grey else arr, alpha, 8, grey, fmt)


def _same_kind(frames: list[NativeImage], path: Path) -> list[NativeImage]:
    """The frames of one file with one bit depth, channel count and alpha (GIF decoders give the
    first frame as palette/grey and the others as RGB): grey only where every frame is grey."""
    if len({f.bits for f in frames}) > 1:
        raise InputError(f"{path}: its pages mix 8- and 16-bit pixels. Fix: split the pages into separate files.")

    def is_grey(f: NativeImage) -> bool:
        p = f.pixels
        return p.shape[2] == 1 or (np.array_equal(p[..., 0], p[..., 1]) and np.array_equal(p[..., 1], p[..., 2]))

    grey = all(is_grey(f) for f in frames)
    has_alpha = any(f.alpha is not None for f in frames)
    out = []
    for f in frames:
        px = f.pixels
        px = px[..., :1] if grey else (np.repeat(px, 3, axis=2) if px.shape[2] == 1 else px)
        alpha = f.alpha if f.alpha is not None or not has_alpha else np.full(px.shape[:2], 255, np.uint8)
        out.append(NativeImage(np.ascontiguousarray(px), alpha, f.bits, grey, f.format))
    return out


def orient_array(arr: np.ndarray, orientation: int) -> np.ndarray:
    """``arr`` (H x W [x C]) as displayed under EXIF/TIFF orientation 1-8, as ``PIL.ImageOps.exif_transpose``."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(int(orientation or 1))
    return np.ascontiguousarray(op(arr)) if op else arr


def _read_colour16(path: Path) -> NativeImage | None:
    """16-bit colour PNG/TIFF, which Pillow silently reduces to 8 bits; OpenCV keeps them (tifffile
    where OpenCV cannot decode the TIFF, e.g. one rotated by its orientation tag). Whether OpenCV
    applied the orientation tag depends on the format and its version (TIFF flips: applied; TIFF
    rotations: not decoded; PNG: ignored), so with a tag the pixels are matched against Pillow's
    8-bit reading of the image as it is displayed (``ImageOps.exif_transpose``)."""
    if path.suffix.lower() not in (".png", ".tif", ".tiff"):
        return None
    import cv2

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    bgr = arr is not None
    if arr is None and path.suffix.lower() != ".png":
        arr = _read_tiff16(path)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        return None
    if bgr:
        arr = arr[..., [2, 1, 0, 3][: arr.shape[2]]]  # OpenCV's BGR(A) -> RGB(A)
    try:
        with open_image(path) as img:
            orientation = img.getexif().get(ORIENTATION, 1)
            pages = getattr(img, "n_frames", 1)
            shown = np.asarray(ImageOps.exif_transpose(img).convert("RGB"),
                               dtype=np.float32) if orientation not in (None, 1) else None
    except InputError:
        raise
    except Exception:  # noqa: BLE001 - Pillow does not parse every file OpenCV reads; then no tag can be seen either
        orientation, pages, shown = 1, 1, None
    if pages > 1:
        raise InputError(f"{path}: a {pages}-page 16-bit colour TIFF; restore reads such pages one at a time only. "
                         "Fix: split the pages into separate files (e.g. with tifffile) and restore those.")
    if shown is not None:
        for cand in (orient_array(arr, orientation), arr):
            if cand.shape[:2] == shown.shape[:2] and np.abs(cand[..., :3] / 257.0 - shown).max() <= 2:
                arr = cand
                break
        else:
            raise InputError(f"{path}: a 16-bit colour image with EXIF orientation {orientation} whose pixels cannot "
                             "be oriented reliably. Fix: save it upright without the orientation tag.")
    alpha = None
    if arr.shape[2] == 4:
        alpha = np.ascontiguousarray(arr[..., 3])  # uint16: written back at 16 bits
    rgb = arr[..., :3].astype(np.float32) / 65535.0
    return NativeImage(np.ascontiguousarray(rgb), alpha, 16, False, "TIFF" if path.suffix.lower() != ".png" else "PNG")


def _read_tiff16(path: Path) -> np.ndarray | None:
    """The first page of a 16-bit colour TIFF as stored (tifffile: no orientation applied), or None."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            if page.dtype != np.uint16 or page.samplesperpixel not in (3, 4):
                return None
            arr = page.asarray()
            return np.moveaxis(arr, 0, -1) if page.axes.startswith("S") else arr
    except Exception:  # noqa: BLE001 - compressed without imagecodecs, or not a TIFF tifffile reads: Pillow's path reports it
        return None


def _frame_pil(img: NativeImage) -> Image.Image:
    px = img.pixels.clip(0, 1)
    if img.bits == 16:
        return Image.fromarray(np.round(px[..., 0] * 65535.0).astype(np.uint16))
    u8 = np.round(px * 255.0).astype(np.uint8)
    pil = Image.fromarray(u8[..., 0] if img.grey else u8)
    if img.alpha is not None:
        pil = pil.convert("LA" if img.grey else "RGBA")
        pil.putalpha(Image.fromarray(img.alpha))
    return pil


def encode_native(img: NativeImage) -> bytes:
    """Encode restored pixels in the input's format and bit depth (no timestamps: reproducible bytes);
    every frame of a multi-frame image, with its durations and loop count."""
    if img.bits == 16 and not img.grey:
        import cv2

        bgr = np.round(img.pixels.clip(0, 1)[..., ::-1] * 65535.0).astype(np.uint16)
        if img.alpha is not None:
            alpha = img.alpha.astype(np.uint16) * (257 if img.alpha.dtype == np.uint8 else 1)
            bgr = np.concatenate([bgr, alpha[..., None]], axis=2)
        ok, buf = cv2.imencode(".tif" if img.format == "TIFF" else ".png", np.ascontiguousarray(bgr))
        if not ok:
            raise InputError("could not encode a 16-bit colour image. Fix: write PNG output.")
        return buf.tobytes()
    pil = _frame_pil(img)
    fmt = img.format if img.format in WRITABLE else "PNG"
    if fmt == "MPO" and not img.frames:
        fmt = "JPEG"
    if fmt in ("JPEG", "MPO") and pil.mode in ("RGBA", "LA", "I;16"):
        fmt = "PNG"
    kwargs: dict = {"quality": 95} if fmt in ("JPEG", "MPO") else {"lossless": True} if fmt == "WEBP" else {}
    if img.frames:
        if fmt not in MULTI_FRAME:
            raise InputError(f"{img.format} cannot hold {1 + len(img.frames)} frames. Fix: restore the frames as "
                             "separate files.")
        kwargs.update(save_all=True, append_images=[_frame_pil(f) for f in img.frames])
        if img.durations is not None:
            kwargs["duration"] = list(img.durations)
        if img.loop is not None:
            kwargs["loop"] = img.loop
        if fmt == "GIF" and img.alpha is not None:
            kwargs["disposal"] = 2  # every frame is whole: clear before drawing the next one
    buf = io.BytesIO()
    pil.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def model_channels(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
    raise InputError("the model has no convolution layer to read its input channels from. Fix: use a model written by "
                     "the train stage.")


def _constant(pixels: np.ndarray) -> bool:
    return bool((pixels == pixels[:1, :1]).all())


def is_constant(img: NativeImage) -> bool:
    """Every pixel (of every frame) the same colour: nothing for a model to restore."""
    return all(_constant(f.pixels) for f in (img, *img.frames))


def check_size(img: NativeImage, path: Path) -> None:
    h, w = img.pixels.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise InputError(
            f"{path}: {w}x{h} pixels, smaller than {MIN_SIDE}x{MIN_SIDE}: too small to restore (every output pixel "
            "would be computed mostly from the network's padding, and instance-normalised networks return a fixed "
            f"colour). Fix: restore a crop or image at least {MIN_SIDE} px on each side."
        )


def restore_image(
    model: nn.Module, img: NativeImage, path: Path, *, fov: str = "none", tile: int = 512, overlap: int = 32,
    device: str = "cpu",
    precision: str = "float32",
) -> NativeImage:
    """Restore one image read by :func:`read_native` (every frame of a multi-frame one).

    Images below :data:`MIN_SIDE` px are refused; a constant image is returned unchanged (at the
    model's scale)."""
    check_size(img, path)
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
        raise InputError(f"{path}: {have} channels, the model takes {want}. Fix: use a model trained on {have}-channel "
                         "images.")
    if _constant(img.pixels):
        s = model_scale(model, channels=want, device=device)
        out = np.repeat(np.repeat(img.pixels, s, axis=0), s, axis=1)
    else:
        out = restore_array(model, np.ascontiguousarray(x, dtype=np.float32), tile=tile, overlap=overlap, device=device,
                            precision=precision)
        if not np.isfinite(out).all():
            bad = int(np.count_nonzero(~np.isfinite(out).all(axis=2)))
            raise InputError(
                f"{path}: the model returned NaN or infinite values for {bad} pixel(s); "
                "nothing was written for this image. "
                + (
                    "Fix: restore with --precision float32."
                    if precision != "float32"
                    else "Fix: use another model (its weights or arithmetic overflow on this image)."
                )
            )
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
    frames = tuple(
        restore_image(model, f, path, fov=fov, tile=tile, overlap=overlap, device=device,
                      precision=precision) for f in img.frames
    )
    return NativeImage(out.astype(np.float32), alpha, img.bits, img.grey, img.format, frames, img.durations, img.loop)


def load_model_checked(folder: Path) -> tuple[nn.Module, dict]:
    """:func:`medrestore.models.load_model` whose every failure is an :class:`InputError` naming
    ``model.json`` (or ``model.safetensors``) and the fix."""
    folder = Path(folder)
    meta_path = folder / "model.json"
    meta: dict = {}
    restore_fix = ("Fix: put back the model.json the train stage wrote beside these weights (`dvc checkout` the train "
                   "stage, or `dvc repro` it), or pass the model folder it belongs to.")
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{meta_path}: not valid JSON ({exc}). {restore_fix}") from exc
        if not isinstance(meta, dict) or not isinstance(meta.get("model"), str):
            raise InputError(f'{meta_path}: no "model" name of a network (an object {{"model": NAME, "kwargs": '
                             f'{{...}}}} is expected). {restore_fix}')
        name, kwargs = meta["model"], meta.get("kwargs", {})
        if not isinstance(kwargs, dict):
            raise InputError(f'{meta_path}: "kwargs" must be an object, not {kwargs!r}. {restore_fix}')
        if name != "chain" and name not in MODELS:
            raise InputError(f"{meta_path}: names the network {name!r}, which is not one of {', '.join(MODELS)}. "
                             f"{restore_fix}")
    try:
        model, loaded = load_model(folder)
    except InputError as exc:
        if "model.json" in str(exc) or "model.safetensors" in str(exc):
            raise
        raise InputError(f"{meta_path}: {exc}") from exc
    except RuntimeError as exc:  # load_state_dict: the weights are another network's (or another size's)
        text = " ".join(str(exc).split()) or type(exc).__name__
        first = text if len(text) <= 240 else text[:240] + "..."
        raise InputError(
            f"{folder / 'model.safetensors'}: its weights do not fit the network {meta_path} describes "
            f"({meta.get('model')!r}, kwargs {meta.get('kwargs', {})}): {first}. {restore_fix}"
        ) from exc
    except (TypeError, ValueError, KeyError) as exc:  # kwargs the network does not take
        raise InputError(f"{meta_path}: cannot build {meta.get('model')!r} with kwargs {meta.get('kwargs', {})} "
                         f"({exc}). {restore_fix}") from exc
    bad = [name for name, t in (*model.named_parameters(),
                                *model.named_buffers()) if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise InputError(
            f"{folder / 'model.safetensors'}: {len(bad)} weight tensor(s) hold NaN or infinite values "
            f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): every output would be NaN. Fix: use a "
            "checkpoint saved before training diverged, or retrain the model (`dvc repro`)."
        )
    return model, loaded


def plan_outputs(inputs: list[str], out_dir: Path, log=print, *, overwrite: bool = False) -> list[tuple[Path, Path]]:
    """(input, output) per input, checked before anything is restored: an ``out_dir`` that is a file,
    two inputs with one file name (which would overwrite each other's output), an output that is one
    of the inputs and (unless ``overwrite``) an output file that exists already are refused.
    A file listed twice is restored once."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: an existing file, not a folder. Fix: pass a folder (it is created if "
                         f"missing), e.g. --out {out_dir.with_name(out_dir.stem + '_restored')}.")
    pairs, by_name, seen = [], {}, set()
    for name in inputs:
        path = Path(name)
        key = os.path.realpath(path)
        if key in seen:
            log(f"{path}: listed more than once; restored once")
            continue
        seen.add(key)
        by_name.setdefault(path.name, []).append(path)
        pairs.append((path, out_dir / path.name))
    clashes = {n: ps for n, ps in by_name.items() if len(ps) > 1}
    if clashes:
        lines = "; ".join(
            f"{' and '.join(str(p) for p in ps)} would {'both' if len(ps) == 2 else 'all'} be written to {out_dir / n}"
            for n, ps in sorted(clashes.items())
        )
        raise InputError(
            f"{lines}. Outputs keep their input's file name, so one would overwrite the other: nothing was restored. "
            "Fix: restore the files of each folder in a separate run with its own --out, or rename one of them."
        )
    inputs_real = {os.path.realpath(p) for p, _ in pairs}
    hits = [(p,
             d) for p, d in pairs if os.path.realpath(d) in inputs_real and os.path.realpath(d) != os.path.realpath(p)]
    if hits:
        lines = "; ".join(f"the output of {p} would be {d}, which is also an input" for p, d in hits)
        raise InputError(f"{lines}: nothing was restored, no input is ever overwritten. Fix: choose an --out folder "
                         "that holds none of the inputs.")
    existing = [d for p, d in pairs if os.path.realpath(d) != os.path.realpath(p) and d.is_file()]
    if existing and not overwrite:
        shown = ", ".join(str(d) for d in existing[:3]) + (
            f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        )
        raise InputError(
            f"{shown}: already exist{'s' if len(existing) == 1 else ''} in --out and would be replaced: nothing was "
            "restored. Fix: choose another --out folder, or pass --overwrite to replace them."
        )
    if existing:
        for d in existing:
            log(f"{d}: exists; replaced (--overwrite)")
    return pairs


def check_tiling(tile, overlap) -> None:
    """Refuse tile and overlap values tiling cannot use (before any image is restored)."""
    from medrestore.serving.inference import MIN_TILE

    if isinstance(tile, bool) or not isinstance(tile, int) or tile < MIN_TILE:
        raise InputError(f"--tile {tile}: tiles must be at least {MIN_TILE} px on a side. Fix: pass e.g. --tile 512 "
                         "(the default).")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise InputError(f"--overlap {overlap}: the overlap is a number of pixels, 0 or more. Fix: pass e.g. --overlap "
                         "32 (the default).")


def prepare_out_dir(out_dir: Path) -> None:
    """Create ``out_dir`` and check a file can be written in it (before any image is restored)."""
    out_dir = Path(out_dir)
    fix = "Fix: choose a folder you can write to, e.g. --out ./restored."
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {out_dir}: cannot create the folder ({exc.strerror or exc}). {fix}") from exc
    try:
        fd, probe = tempfile.mkstemp(prefix=".medrestore-write-check.", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"--out {out_dir}: cannot write in this folder ({exc.strerror or exc}). {fix}") from exc


def input_colour_warnings(img: NativeImage, colour: dict | None, path: Path) -> list[str]:
    """:func:`medrestore.serving.colour.colour_warnings` of an RGB input (its FOV detected) against the
    model's training colour range (``model.json``'s ``colour``)."""
    if not colour or img.pixels.shape[2] != 3:
        return []
    from medrestore.serving.colour import colour_warnings

    step = max(1, max(img.pixels.shape[:2]) // 512)  # channel means of a large photograph: every step-th pixel suffices
    rgb = np.round(np.clip(img.pixels[::step, ::step], 0, 1) * 255).astype(np.uint8)
    mask = detect_fov(rgb)
    return colour_warnings(rgb, mask if mask.mean() > 0.05 else None, colour, str(path))


def restore_files(
    model_spec: str,
    inputs: list[str],
    out_dir: Path,
    *,
    fov: str = "none",
    tile: int = 512,
    overlap: int = 32,
    device: str | None = None,
    precision: str = "float32",
    progress: bool | None = None,
    log=print,
    overwrite: bool = False,
) -> tuple[list[Path], list[str]]:
    """Restore every input into ``out_dir`` (same file name and format). A bad file is reported and
    skipped; the others are still restored. Returns (written files, error messages).

    Checked before any image is restored (:class:`InputError`, nothing written): the precision,
    ``out_dir`` (a folder, writable), output names (no two inputs with one name, no output that is an
    input, no existing file replaced unless ``overwrite``), tile and overlap, and the model."""
    from tqdm.auto import tqdm

    from medrestore.serving.inference import PRECISIONS

    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r}. Fix: use one of {', '.join(PRECISIONS)}.")
    check_tiling(tile, overlap)
    out_dir = Path(out_dir)
    pairs = plan_outputs(inputs, out_dir, log, overwrite=overwrite)
    folder = resolve_model(model_spec)
    model, meta = load_model_checked(folder)
    prepare_out_dir(out_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    written, errors = [], []
    for path, dest in tqdm(pairs, desc="restoring", unit="image", disable=None if progress is None else not progress):
        try:
            if os.path.realpath(dest) == os.path.realpath(path):
                raise InputError(f"{path}: the output would overwrite the input. Fix: choose another --out folder.")
            if dest.is_dir():
                raise InputError(f"{dest}: a folder has the output's name. Fix: move it away, or choose another --out "
                                 "folder.")
            img = read_native(path)
            for line in input_colour_warnings(img, meta.get("colour"), path):
                log(line)
            restored = restore_image(model, img, path, fov=fov, tile=tile, overlap=overlap, device=device,
                                     precision=precision)
            data = encode_native(restored)
            try:
                write_bytes_atomic(dest, data)
            except OSError as exc:
                raise InputError(f"{dest}: cannot be written ({exc.strerror or exc}). Fix: free disk space or check "
                                 "the folder's permissions.") from exc
            written.append(dest)
            notes = []
            if is_constant(img):
                notes.append("every pixel is the same colour: written unchanged")
            if img.frames:
                notes.append(f"{1 + len(img.frames)} frames")
            log(f"{path} -> {dest}" + (f" ({'; '.join(notes)})" if notes else ""))
        except InputError as exc:
            errors.append(str(exc))
    return written, errors
