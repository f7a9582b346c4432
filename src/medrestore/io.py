"""Atomic writers, image reading with clear errors, and params loading.

Every file the pipeline produces goes through one of the ``write_*_atomic`` helpers: the bytes
are written to a temporary file in the destination folder, flushed to disk, then renamed over
the destination. An interrupted stage therefore never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


class InputError(RuntimeError):
    """Bad input: the message names the file and what to do about it."""


# --------------------------------------------------------------------------- atomic writers
@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` only on success."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".tmp{dest.suffix}", dir=dest.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(dest: str | os.PathLike, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(dest: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(dest, text.encode("utf-8"))


def write_json_atomic(dest: str | os.PathLike, obj: Any) -> None:
    """Write JSON with sorted keys so the same content always gives the same bytes."""
    write_text_atomic(dest, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return obj.as_posix()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_npy_atomic(dest: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)


def write_png_atomic(dest: str | os.PathLike, image: np.ndarray) -> None:
    """Write a uint8/uint16 HxW or HxWxC array as PNG (no timestamp chunks: bytes are reproducible)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", optimize=False)
    write_bytes_atomic(dest, buf.getvalue())


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """Build a whole folder in a temporary sibling, then swap it into place."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    os.chmod(tmp, 0o755)
    try:
        yield tmp
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


# --------------------------------------------------------------------------- reading
def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: missing. Fix: run the stage that produces it (`dvc repro`).")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc}). Fix: delete it and rerun `dvc repro`.") from exc


def read_image(path: str | os.PathLike, mode: str = "RGB") -> np.ndarray:
    """Read an image file as uint8 (``mode`` RGB or L).

    16-bit and float images are rescaled to 8 bits by their full range, palette and CMYK images
    are converted, an alpha channel is dropped. Any failure raises :class:`InputError` naming the
    file and the fix.
    """
    path = Path(path)
    fix = "Fix: re-export it as an 8- or 16-bit PNG, JPEG or TIFF, or remove it from the input folder."
    if not path.is_file():
        raise InputError(f"{path}: no such file. Fix: check the path.")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes). {fix}")
    try:
        with Image.open(path) as img:
            img.load()
            return _to_uint8(img, mode, path)
    except InputError:
        raise
    except UnidentifiedImageError as exc:
        raise InputError(f"{path}: not an image format that can be read. {fix}") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{path}: the image is corrupt or truncated ({exc}). {fix}") from exc


def _to_uint8(img: Image.Image, mode: str, path: Path) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{path}: the image holds NaN or infinite values. Fix: replace them before use.")
        lo, hi = float(arr.min()), float(arr.max())
        if img.mode.startswith("I;16"):
            lo, hi = 0.0, 65535.0
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo)
        grey = np.round(scaled * 255.0).astype(np.uint8)
        img = Image.fromarray(grey, mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA" if mode == "RGB" else "LA")
        img = img.convert("RGB" if mode == "RGB" else "L")
    return np.asarray(img.convert(mode), dtype=np.uint8)


def list_images(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


# --------------------------------------------------------------------------- params
def load_params(section: str | None = None, path: str | os.PathLike = "params.yaml") -> Any:
    """Read ``params.yaml`` (or one top-level section of it)."""
    path = Path(path)
    with open(path) as fh:
        params = yaml.safe_load(fh)
    if section is None:
        return params
    if section not in params:
        raise InputError(f"{path}: no section '{section}'. Fix: add it (see the README's params table).")
    return params[section]


def repo_root() -> Path:
    """The repository root: ``DVC_ROOT`` inside a DVC stage, else the nearest folder with dvc.yaml."""
    env = os.environ.get("DVC_ROOT")
    if env:
        return Path(env)
    here = Path.cwd().resolve()
    for cand in (here, *here.parents):
        if (cand / "dvc.yaml").exists():
            return cand
    return here
