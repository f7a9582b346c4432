"""Fuzzing the two readers of untrusted bytes: the image loader and the archive extractor.

Inputs are random bytes and real files (a CHASE_DB1 crop as PNG, JPEG and TIFF; a zip and a tar
of real images) with random bytes overwritten, inserted or cut. The only outcomes allowed are a
correct result or :class:`medrestore.core.io.InputError` naming the file: never another exception,
never a file outside the target folder. Each test is bounded (example count, no deadline) so the
file runs in well under a minute in CI.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from medrestore.core.io import MAX_PIXELS_ENV, InputError, read_image
from medrestore.data.fetch import extract_archive

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def seeds(chase_image) -> dict[str, bytes]:
    crop = np.ascontiguousarray(chase_image[300:348, 400:464])
    out = {}
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg"), ("TIFF", "tif")):
        buf = io.BytesIO()
        Image.fromarray(crop).save(buf, format=fmt)
        out[ext] = buf.getvalue()
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("set/images/a.png", out["png"])
        zf.writestr("set/images/b.jpg", out["jpg"])
    out["zip"] = zbuf.getvalue()
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w:gz") as tf:
        for name in ("a.png", "b.jpg"):
            data = out[name.split(".")[1]]
            info = tarfile.TarInfo(f"set/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    out["tar.gz"] = tbuf.getvalue()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        info = tarfile.TarInfo("set/a.png")
        info.size = len(out["png"])
        tf.addfile(info, io.BytesIO(out["png"]))
    out["tar"] = raw.getvalue()
    return out


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """``data`` with up to 8 bytes overwritten, a run inserted or deleted, or the tail cut."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(0, 8))):
        buf[draw(st.integers(0, len(buf) - 1))] = draw(st.integers(0, 255))
    op = draw(st.sampled_from(["none", "insert", "delete", "cut"]))
    at = draw(st.integers(0, len(buf)))
    if op == "insert":
        buf[at:at] = draw(st.binary(min_size=1, max_size=64))
    elif op == "delete":
        del buf[at : at + draw(st.integers(1, 256))]
    elif op == "cut":
        del buf[at:]
    return bytes(buf)


def _read_outcome(data: bytes, ext: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"fuzz.{ext}"
        path.write_bytes(data)
        try:
            out = read_image(path)
        except InputError as exc:
            assert str(path) in str(exc) and "Fix:" in str(exc), str(exc)
            return
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and min(out.shape[:2]) >= 1


@pytest.fixture
def small_pixel_limit(monkeypatch):
    # A mutated header may claim any size: keep the decodes the limit allows small and fast
    # (the same for every example, so sharing this function-scoped fixture is safe).
    monkeypatch.setenv(MAX_PIXELS_ENV, "4000000")


@FUZZ
@given(data=st.binary(min_size=1, max_size=2048), ext=st.sampled_from(["png", "jpg", "tif", "bmp"]))
def test_read_image_on_random_bytes(small_pixel_limit, data, ext):
    _read_outcome(data, ext)


@FUZZ
@given(st.data())
def test_read_image_on_mutated_png_jpeg_tiff(small_pixel_limit, seeds, data):
    ext = data.draw(st.sampled_from(["png", "jpg", "tif"]))
    _read_outcome(data.draw(mutated(seeds[ext])), ext)


def _extract_outcome(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "work").mkdir()
        archive = root / "work" / f"fuzz.{suffix}"
        archive.write_bytes(data)
        target = root / "work" / "out"
        try:
            files = extract_archive(archive, target, max_bytes=1 << 20, max_files=50)
        except InputError as exc:
            assert str(archive) in str(exc) and "Fix:" in str(exc), str(exc)
            assert not target.exists()
        else:
            for f in files:
                assert f.resolve().is_relative_to(target.resolve()) and f.is_file()
        # Nothing outside the target: the work folder holds the archive and at most the target.
        assert sorted(os.listdir(root)) == ["work"]
        assert set(os.listdir(root / "work")) <= {archive.name, "out"}
        for here, dirs, names in os.walk(target):
            for n in dirs + names:
                assert not (Path(here) / n).is_symlink()


@FUZZ
@given(data=st.binary(min_size=0, max_size=4096), suffix=st.sampled_from(["zip", "tar", "tar.gz"]))
def test_extract_archive_on_random_bytes(data, suffix):
    _extract_outcome(data, suffix)


@FUZZ
@given(st.data())
def test_extract_archive_on_mutated_zip_and_tar(seeds, data):
    suffix = data.draw(st.sampled_from(["zip", "tar", "tar.gz"]))
    _extract_outcome(data.draw(mutated(seeds[suffix])), suffix)
