"""Atomic writers, image reading with clear errors, and params loading.

Every file the pipeline produces goes through one of the ``write_*_atomic`` helpers: the bytes
are written to a temporary file in the destination folder, flushed to disk, then renamed over
the destination. An interrupted stage therefore never leaves a half-written file behind.
Temporary names carry the writer's process id (``.<name>.<pid>.<random>.tmp``); a stage killed
with ``kill -9`` leaves its temporary folder behind, and the next :func:`atomic_dir` in the same
folder removes every such leftover whose process is gone.

:func:`read_image` refuses images above a pixel limit before decoding them (``MEDRESTORE_MAX_PIXELS``,
default 100 million pixels), in place of PIL's decompression-bomb check.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=f".tmp{dest.suffix}", dir=dest.parent)
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


# .<name>.<pid>.<8 random>.tmp[.suffix] (atomic_path, atomic_dir) and .<name>.<pid>.old (atomic_dir's swap)
_TEMP_NAME = re.compile(r"^\..+\.(\d+)\.(?:[A-Za-z0-9_]{8}\.tmp(?:\..*)?|old)$")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files and folders that killed writers left in ``folder``; return them.

    Only names made by :func:`atomic_path` / :func:`atomic_dir` whose process no longer runs are
    touched, so a writer still at work beside this one keeps its files.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        m = _TEMP_NAME.match(entry.name)
        if m is None or _pid_alive(int(m.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """Build a whole folder in a temporary sibling, then swap it into place.

    ``dest`` is either absent or complete at every moment but one: between moving the previous
    folder aside and moving the new one in (two renames), where a kill leaves ``dest`` absent and
    the stage is seen as not run. Leftovers of killed writers in ``dest``'s folder are removed first.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(dest.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=".tmp", dir=dest.parent))
    os.chmod(tmp, 0o755)
    try:
        yield tmp
        if dest.exists():
            old = dest.with_name(f".{dest.name}.{os.getpid()}.old")
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


MAX_PIXELS_ENV = "MEDRESTORE_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 100_000_000  # 10000 x 10000: 300 MB as 8-bit RGB, about 1.2 GB as float32
_READ_FIX = "Fix: re-export it as an 8- or 16-bit PNG, JPEG or TIFF, or remove it from the input folder."
_PIL_LOCK = threading.Lock()


def max_pixels() -> int:
    """The largest image (width x height) :func:`read_image` decodes: ``$MEDRESTORE_MAX_PIXELS`` or 100 million."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(raw))
    except ValueError:
        value = 0
    if value <= 0:
        raise InputError(f"{MAX_PIXELS_ENV}={raw!r}: not a positive number of pixels. Fix: set it to e.g. 400000000 or "
                         "unset it.")
    return value


def check_pixel_limit(path: str | os.PathLike, width: int, height: int) -> None:
    """Raise :class:`InputError` when a ``width`` x ``height`` image is above :func:`max_pixels`."""
    limit = max_pixels()
    if width * height > limit:
        gib = width * height * 3 / 2**30
        raise InputError(
            f"{path}: {width}x{height} = {width * height} pixels, above the limit of {limit} pixels "
            f"({MAX_PIXELS_ENV}); decoding it needs at least {gib:.1f} GiB. Fix: crop or downscale it, or raise "
            f"the limit (e.g. {MAX_PIXELS_ENV}={width * height}) on a machine with the memory for it."
        )


@contextlib.contextmanager
def open_image(path: str | os.PathLike) -> Iterator[Image.Image]:
    """``PIL.Image.open`` whose size is checked against :func:`max_pixels` before any pixel is decoded.

    PIL's own decompression-bomb check (a warning above 89 million pixels, an exception above
    twice that) is replaced by this limit, so the only outcome of a huge image is an
    :class:`InputError` that names the limit and how to raise it.
    """
    path = Path(path)
    with _PIL_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            img = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    with img:
        check_pixel_limit(path, *img.size)
        yield img


def read_image(path: str | os.PathLike, mode: str = "RGB") -> np.ndarray:
    """Read an image file as uint8 (``mode`` RGB or L).

    The format is found from the file's bytes, not its extension (PNG bytes named ``.jpg`` are
    read as PNG). 16-bit images are scaled by 255/65535; float images by 255 when their values lie
    in [0, 1], unchanged in [0, 255], else stretched from their minimum to their maximum; NaN or
    infinite values are refused. Palette, CMYK, grey and bilevel images are converted, an alpha
    channel is dropped. TIFFs PIL cannot decode (float RGB, multi-sample) are read with tifffile.
    Images above :func:`max_pixels` are refused before decoding. Every failure raises
    :class:`InputError` naming the file and the fix; no other exception escapes.
    """
    path = Path(path)
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be RGB or L, not {mode!r}")
    if path.is_dir():
        raise InputError(f"{path}: a folder, not an image file. Fix: pass an image file (e.g. one of {path}/*.png).")
    if not path.is_file():
        raise InputError(f"{path}: no such file. Fix: check the path.")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes). {_READ_FIX}")
    try:
        with open_image(path) as img:
            img.load()
            return _to_uint8(img, mode, path)
    except InputError:
        raise
    except UnidentifiedImageError as exc:
        if _is_tiff(path):
            return _read_tiff(path, mode)
        raise InputError(f"{path}: not an image format that can be read. {_READ_FIX}") from exc
    except MemoryError as exc:
        raise InputError(f"{path}: not enough memory to decode it. Fix: crop or downscale it.") from exc
    except Exception as exc:  # decoders of hostile bytes raise anything (OSError, ValueError, struct.error, ...)
        raise InputError(
            f"{path}: the image is corrupt or truncated ({type(exc).__name__}: {exc}). {_READ_FIX}"
        ) from exc



def read_mask(path: str | os.PathLike) -> np.ndarray:
    """A mask image (FOV, vessels) as booleans: grey level above 127 (masks are stored 0/255)."""
    return read_image(path, "L") > 127

def _is_tiff(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _read_tiff(path: Path, mode: str) -> np.ndarray:
    """TIFFs PIL cannot decode (float RGB, 16-bit multi-sample, ...), through tifffile."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            height, width = page.imagelength, page.imagewidth
            check_pixel_limit(path, width, height)
            arr = page.asarray()
    except InputError:
        raise
    except MemoryError as exc:
        raise InputError(f"{path}: not enough memory to decode it. Fix: crop or downscale it.") from exc
    except Exception as exc:  # tifffile raises many types on corrupt files
        raise InputError(f"{path}: the TIFF is corrupt or uses an unsupported layout ({type(exc).__name__}: {exc}). "
                         f"{_READ_FIX}") from exc
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar (separate) samples first
    if arr.ndim == 3 and arr.shape[-1] in (1, 2, 3, 4):
        arr = arr[..., :3] if arr.shape[-1] >= 3 else arr[..., 0]  # drop alpha / extra samples
    if arr.ndim not in (2, 3) or arr.shape[0] != height or arr.shape[1] != width:
        raise InputError(f"{path}: a TIFF with {arr.shape} samples, not a grey or RGB image. {_READ_FIX}")
    out = _scale_to_uint8(arr, path)
    if mode == "L":
        return out if out.ndim == 2 else np.asarray(Image.fromarray(out).convert("L"))
    return np.repeat(out[..., None], 3, axis=-1) if out.ndim == 2 else np.ascontiguousarray(out)


def _scale_to_uint8(arr: np.ndarray, path: Path) -> np.ndarray:
    """Integer and float pixels to uint8 by the rules of :func:`read_image`."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    values = arr.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        bad = int(np.count_nonzero(~(finite.all(axis=-1) if values.ndim == 3 else finite)))
        raise InputError(
            f"{path}: {bad} pixel(s) are NaN or infinite. Fix: replace them (e.g. numpy.nan_to_num) and save the image "
            "again."
        )
    lo, hi = float(values.min()), float(values.max())
    if np.issubdtype(arr.dtype, np.integer):
        if lo >= 0 and hi <= 255:
            scaled = values
        elif lo >= 0 and hi <= 65535:
            scaled = values * (255.0 / 65535.0)
        else:
            scaled = (values - lo) * (255.0 / (hi - lo))
    elif lo >= 0 and hi <= 1:
        scaled = values * 255.0
    elif lo >= 0 and hi <= 255:
        scaled = values
    else:
        scaled = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def _to_uint8(img: Image.Image, mode: str, path: Path) -> np.ndarray:
    if img.mode.startswith("I;16"):
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(np.round(arr * (255.0 / 65535.0)), 0, 255).astype(np.uint8))
    elif img.mode in ("I", "F"):
        img = Image.fromarray(_scale_to_uint8(np.asarray(img), path))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA" if mode == "RGB" else "LA")
        img = img.convert("RGB" if mode == "RGB" else "L")
    return np.asarray(img.convert(mode), dtype=np.uint8)


def list_images(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


# --------------------------------------------------------------------------- params
class ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader that also reads YAML 1.2 floats written without a point or an exponent
    sign (``1e-05``, ``5e3``). ``dvc exp run -S lr=1e-5`` writes ``lr: 1e-05`` into params.yaml (DVC
    writes YAML 1.2); YAML 1.1 reads that as the text ``'1e-05'``, and a learning rate would reach
    the optimiser as a string."""


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    """A mapping whose every key appears once (YAML forbids duplicates; PyYAML keeps the last value
    silently, DVC's loader refuses them): a repeated key is a :class:`yaml.constructor.ConstructorError`."""
    seen: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # keys merged in (<<) may be overridden
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            continue  # the base constructor reports an unhashable key
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"found duplicate key {key!r} (first at line {seen[key].line + 1})", key_node.start_mark,
            )
        seen[key] = key_node.start_mark
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


ParamsLoader.construct_mapping = _mapping_without_duplicates  # type: ignore[method-assign]


ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str | bytes) -> Any:
    """YAML text parsed as DVC reads it (:class:`ParamsLoader`): params files, dvc.lock."""
    return yaml.load(text, Loader=ParamsLoader)  # noqa: S506 - a SafeLoader subclass


def load_params(section: str | None = None, path: str | os.PathLike = "params.yaml") -> Any:
    """Read ``params.yaml`` (or one top-level section of it)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such params file. Fix: check the path (the repository's params.yaml is at its "
                         "root).")
    with open(path) as fh:
        text = fh.read()
    try:
        params = load_yaml(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({' '.join(str(exc).split())}). Fix: correct that line "
                         "(each key once per section; `git diff` shows what changed).") from exc
    if not isinstance(params, dict):
        raise InputError(f"{path}: not a mapping of sections (got {type(params).__name__}). Fix: restore it with `git "
                         f"checkout {path}`.")
    if section is None:
        return params
    if section not in params:
        raise InputError(f"{path}: no section '{section}'. Fix: add it (see the README's params table).")
    return params[section]


def workspace_root() -> Path:
    """The nearest folder with a dvc.yaml from the working directory: the workspace whose artifacts
    are meant (inside a queued experiment that is its own copy, not ``DVC_ROOT``'s parent repo)."""
    here = Path.cwd().resolve()
    for cand in (here, *here.parents):
        if (cand / "dvc.yaml").exists():
            return cand
    return here


def repo_path(value: str | Path) -> Path:
    """A path of params.yaml (``download.mirror``, ``evaluate.assets``): as given when absolute, else
    relative to the repository root (:func:`repo_root`), not to the working directory: a queued
    experiment runs in a copy under ``.dvc/tmp/exps/`` where ``../shared`` would point elsewhere."""
    path = Path(value)
    return path if path.is_absolute() else repo_root() / path


def repo_root() -> Path:
    """The repository root: ``DVC_ROOT`` inside a DVC stage, else the nearest folder with dvc.yaml."""
    env = os.environ.get("DVC_ROOT")
    return Path(env) if env else workspace_root()
