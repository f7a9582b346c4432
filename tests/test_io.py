import json
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from PIL import Image

from medrestore.core.io import (
    MAX_PIXELS_ENV,
    InputError,
    atomic_dir,
    atomic_path,
    max_pixels,
    read_image,
    remove_stale_temporaries,
    write_json_atomic,
    write_png_atomic,
)

REPO = Path(__file__).resolve().parents[1]


def test_write_json_atomic_is_byte_stable(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"b": 1, "a": np.float32(0.5)})
    first = (tmp_path / "a.json").read_bytes()
    write_json_atomic(tmp_path / "a.json", {"a": 0.5, "b": 1})
    assert (tmp_path / "a.json").read_bytes() == first
    assert json.loads(first) == {"a": 0.5, "b": 1}


def test_atomic_path_leaves_old_file_when_writer_fails(tmp_path):
    dest = tmp_path / "out.txt"
    dest.write_text("good")
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert dest.read_text() == "good"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_atomic_dir_replaces_whole_folder_only_on_success(tmp_path):
    dest = tmp_path / "stage"
    with atomic_dir(dest) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(ValueError):
        with atomic_dir(dest) as tmp:
            (tmp / "b").write_text("2")
            raise ValueError
    assert sorted(os.listdir(dest)) == ["a"]
    assert sorted(os.listdir(tmp_path)) == ["stage"]


def test_png_round_trip_is_byte_identical(tmp_path, retina):
    write_png_atomic(tmp_path / "a.png", retina[:64, :64])
    write_png_atomic(tmp_path / "b.png", retina[:64, :64])
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert np.array_equal(read_image(tmp_path / "a.png"), retina[:64, :64])


def test_read_image_errors_name_file_and_fix(tmp_path, chase_dir):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.png.*empty.*Fix"):
        read_image(empty)
    truncated = tmp_path / "trunc.jpg"
    truncated.write_bytes((chase_dir / "Image_01L.jpg").read_bytes()[:5000])
    with pytest.raises(InputError, match=r"trunc\.jpg.*Fix"):
        read_image(truncated)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(InputError, match=r"notes\.png.*not an image.*Fix"):
        read_image(text)


def test_read_image_converts_16bit_grey_and_rgba(tmp_path, retina):
    grey16 = (retina[..., 1].astype(np.uint16) * 257)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    out = read_image(tmp_path / "g16.png")
    assert out.shape == retina.shape[:2] + (3,) and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], retina[..., 1])
    rgba = np.dstack([retina, np.full(retina.shape[:2], 255, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert np.array_equal(read_image(tmp_path / "rgba.png"), retina)


# --------------------------------------------------------------------------- bad and unusual images
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(arr: np.ndarray) -> bytes:
    """A PNG written by hand: PIL cannot write 16-bit RGB, the case this is for."""
    h, w = arr.shape[:2]
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    depth = 16 if arr.dtype == np.uint16 else 8
    raw = b"".join(b"\x00" + arr[y].astype(">u2" if depth == 16 else "u1").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, depth, {1: 0, 3: 2, 4: 6}[channels], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def crop(retina):
    return np.ascontiguousarray(retina[400:496, 300:428])  # 96 x 128, vessels and background


def test_png_bytes_named_jpg_are_read_as_png(tmp_path, crop):
    write_png_atomic(tmp_path / "really_png.jpg", crop)
    assert np.array_equal(read_image(tmp_path / "really_png.jpg"), crop)


def test_16bit_png_and_tiff_grey_and_rgb_scale_to_8_bits(tmp_path, crop):
    rgb16 = crop.astype(np.uint16) * 257
    (tmp_path / "rgb16.png").write_bytes(png_bytes(rgb16))
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb16, photometric="rgb")
    tifffile.imwrite(tmp_path / "g16.tif", rgb16[..., 1])
    assert np.array_equal(read_image(tmp_path / "rgb16.png"), crop)
    assert np.array_equal(read_image(tmp_path / "rgb16.tif"), crop)
    assert np.array_equal(read_image(tmp_path / "g16.tif", "L"), crop[..., 1])


def test_grey_palette_and_alpha_images_convert(tmp_path, crop):
    grey = crop[..., 1]
    Image.fromarray(grey).save(tmp_path / "grey.png")
    out = read_image(tmp_path / "grey.png")
    assert out.shape == crop.shape and all(np.array_equal(out[..., c], grey) for c in range(3))
    assert np.array_equal(read_image(tmp_path / "grey.png", "L"), grey)
    pal = Image.fromarray(crop).quantize(64)
    pal.save(tmp_path / "pal.png")
    assert np.array_equal(read_image(tmp_path / "pal.png"), np.asarray(pal.convert("RGB")))
    assert np.abs(read_image(tmp_path / "pal.png").astype(int) - crop).mean() < 6  # 64 colours approximate the photo
    pal.save(tmp_path / "pal_t.png", transparency=0)
    assert np.array_equal(read_image(tmp_path / "pal_t.png"), np.asarray(pal.convert("RGB")))
    Image.fromarray(np.dstack([grey, np.full_like(grey, 128)]), "LA").save(tmp_path / "la.png")
    assert np.array_equal(read_image(tmp_path / "la.png", "L"), grey)


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path, crop):
    Image.fromarray(crop).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    out = read_image(tmp_path / "cmyk.jpg")
    assert out.shape == crop.shape and np.abs(out.astype(int) - crop).mean() < 2.0


def test_float_tiffs_scale_and_nan_or_inf_stop_naming_the_file(tmp_path, crop):
    unit = crop.astype(np.float32) / 255.0
    tifffile.imwrite(tmp_path / "f_grey.tif", unit[..., 0])
    tifffile.imwrite(tmp_path / "f_rgb.tif", unit, photometric="rgb")  # PIL cannot open float RGB TIFFs
    assert np.array_equal(read_image(tmp_path / "f_grey.tif", "L"), crop[..., 0])
    assert np.array_equal(read_image(tmp_path / "f_rgb.tif"), crop)
    for name, bad in {"nan.tif": np.nan, "inf.tif": np.inf}.items():
        arr = unit.copy()
        arr[5, 7] = bad
        tifffile.imwrite(tmp_path / name, arr, photometric="rgb")
        tifffile.imwrite(tmp_path / f"grey_{name}", arr[..., 0])
        for file in (name, f"grey_{name}"):
            with pytest.raises(InputError, match=rf"{file}: 1 pixel\(s\) are NaN or infinite\. Fix: replace them"):
                read_image(tmp_path / file)


def test_truncated_png_tiff_and_jpeg_stop_naming_the_file(tmp_path, crop, chase_dir):
    write_png_atomic(tmp_path / "full.png", crop)
    tifffile.imwrite(tmp_path / "full.tif", crop, photometric="rgb")
    sources = {"png": (tmp_path / "full.png").read_bytes(), "tif": (tmp_path / "full.tif").read_bytes(),
               "jpg": (chase_dir / "Image_01L.jpg").read_bytes()}
    for ext, data in sources.items():
        for cut in (8, len(data) // 2, len(data) - 200):
            bad = tmp_path / f"cut{cut}.{ext}"
            bad.write_bytes(data[:cut])
            with pytest.raises(InputError, match=rf"cut{cut}\.{ext}: .*Fix: "):
                read_image(bad)


def _huge_png(path, side: int) -> None:
    """A valid black ``side`` x ``side`` grey PNG, compressed row by row (a 20000-pixel side is 390 kB)."""
    comp = zlib.compressobj(9)
    row = bytes(side + 1)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))


# Peak memory from VmHWM: getrusage's ru_maxrss carries the parent's (pytest's) peak across fork and exec.
HUGE_READER = """
import re, sys
from medrestore.core.io import InputError, read_image
try:
    read_image(sys.argv[1])
    print("READ")
except InputError as exc:
    print("INPUTERROR", exc)
hwm_kb = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
print("MAXRSS_MB", hwm_kb // 1024)
"""


def test_20000_square_image_is_refused_before_decoding_with_the_limit_named(tmp_path):
    huge = tmp_path / "huge.png"
    _huge_png(huge, 20000)
    env = {k: v for k, v in os.environ.items() if k != MAX_PIXELS_ENV}
    res = subprocess.run([sys.executable, "-W", "error", "-c", HUGE_READER, str(huge)], capture_output=True, text=True,
                         env=env, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "INPUTERROR" in res.stdout and "huge.png: 20000x20000 = 400000000 pixels" in res.stdout
    assert (
        f"limit of {max_pixels()} pixels ({MAX_PIXELS_ENV})" in res.stdout
        and f"{MAX_PIXELS_ENV}=400000000" in res.stdout
    )
    # Decoding would take 400 MB for the grey plane and 1.2 GB as RGB; the refusal costs the interpreter's baseline.
    rss = int(res.stdout.split("MAXRSS_MB")[1])
    assert rss < 250, res.stdout


def test_pixel_limit_is_configurable_and_replaces_pils_bomb_check(tmp_path, crop, monkeypatch):
    write_png_atomic(tmp_path / "a.png", crop)  # 96 x 128 = 12288 pixels
    monkeypatch.setenv(MAX_PIXELS_ENV, "10000")
    with pytest.raises(InputError,
                       match=rf"a\.png: 128x96 = 12288 pixels, above the limit of 10000 .*{MAX_PIXELS_ENV}=12288"):
        read_image(tmp_path / "a.png")
    monkeypatch.setenv(MAX_PIXELS_ENV, "12288")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL alone would warn, then refuse above 2000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(read_image(tmp_path / "a.png"), crop)
    assert Image.MAX_IMAGE_PIXELS == 1000  # PIL's setting is left as it was
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(InputError, match=MAX_PIXELS_ENV):
        read_image(tmp_path / "a.png")


def test_folder_source_reads_every_odd_format_and_refuses_non_images(tmp_path, crop):
    from medrestore.data.prepare import prepare_sources
    from medrestore.data.sources import gather

    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    write_png_atomic(data / "png_named.jpg", crop)
    (data / "sub" / "rgb16.png").write_bytes(png_bytes(crop.astype(np.uint16) * 257))
    Image.fromarray(crop).convert("CMYK").save(data / "cmyk.jpeg", quality=95)
    Image.fromarray(crop).quantize(64).save(data / "pal.png")
    Image.fromarray(np.dstack([crop, np.full(crop.shape[:2], 255, np.uint8)])).save(data / "rgba.png")
    tifffile.imwrite(data / "f_rgb.tiff", crop.astype(np.float32) / 255.0, photometric="rgb")
    (data / ".DS_Store").write_bytes(b"\x00\x01junk")  # hidden files are skipped
    records = gather(["folder"], tmp_path / "sources", mirror=tmp_path / "none", folder=data,
                     cache_dir=tmp_path / "cache", allow_network=False)
    assert sorted(r.id for r in records) == ["folder/cmyk", "folder/f_rgb", "folder/pal", "folder/png_named",
                                             "folder/rgba", "folder/sub__rgb16"]
    for r in records:
        out = read_image(r.image)
        assert out.shape == crop.shape and np.abs(out.astype(int) - crop).mean() < 6, r.id

    (data / "notes.txt").write_text("acquisition notes")
    with pytest.raises(InputError, match=r"notes\.txt: not an image .*Fix: remove it"):
        gather(["folder"], tmp_path / "s2", mirror=tmp_path / "none", folder=data, cache_dir=tmp_path / "cache",
               allow_network=False)
    (data / "notes.txt").unlink()
    (data / "broken.png").write_bytes((data / "pal.png").read_bytes()[:100])
    with pytest.raises(InputError, match=r"broken\.png: .*Fix: "):
        gather(["folder"], tmp_path / "s3", mirror=tmp_path / "none", folder=data, cache_dir=tmp_path / "cache",
               allow_network=False)
    (data / "broken.png").unlink()

    # An image smaller than the smallest usable size stops at prepare, naming it.
    write_png_atomic(data / "tiny.png", crop[:20, :20])
    records = gather(["folder"], tmp_path / "s4", mirror=tmp_path / "none", folder=data, cache_dir=tmp_path / "cache",
                     allow_network=False)
    manifest = {"images": [r.as_dict(tmp_path / "s4") for r in records]}
    with pytest.raises(InputError, match=r"tiny\.png: image is 20x20, too small"):
        prepare_sources(manifest, tmp_path / "s4", tmp_path / "prepared", size=64, mode="resize", fov_threshold=0.1)


def test_stale_temporaries_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead_pid = int(dead.stdout)
    (tmp_path / f".patches.{dead_pid}.abcd1234.tmp").mkdir()
    (tmp_path / f".patches.{dead_pid}.abcd1234.tmp" / "train.npy").write_bytes(b"half")
    (tmp_path / f".model.json.{dead_pid}.x1y2z3w4.tmp.json").write_text("{")
    (tmp_path / f".eval.{dead_pid}.old").mkdir()
    live = tmp_path / f".other.{os.getpid()}.abcd1234.tmp"
    live.mkdir()
    (tmp_path / ".keep.me").write_text("not ours")
    (tmp_path / "patches").mkdir()
    with atomic_dir(tmp_path / "patches") as tmp:
        (tmp / "a").write_text("1")
    assert sorted(os.listdir(tmp_path)) == sorted([".keep.me", live.name, "patches"])
    assert remove_stale_temporaries(tmp_path) == []


def test_params_written_by_dvc_set_param_keep_their_numbers(tmp_path):
    """``dvc exp run -S train.models.redae.lr=1e-5`` writes ``lr: 1e-05`` (YAML 1.2, no point): the
    pipeline reads it as the float DVC meant, not as text; ints, strings and the repository's own
    params.yaml read as before."""
    from dvc.utils.hydra import apply_overrides

    from medrestore.core.io import load_params, load_yaml

    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    apply_overrides(params, ["train.models.redae.lr=1e-5", "train.models.cdae.lr=2.5e-06", "seed=7"])
    assert "lr: 1e-05" in params.read_text()  # what DVC writes
    got = load_params("train", params)["models"]
    assert got["redae"]["lr"] == 1e-05 and isinstance(got["redae"]["lr"], float)
    assert got["cdae"]["lr"] == 2.5e-06 and load_params(path=params)["seed"] == 7
    assert load_yaml("a: [5e3, 1E+2, .5e-1, 1.0, 12, 1e5x, v1e5, '1e-05']") == {
        "a": [5000.0, 100.0, 0.05, 1.0, 12, "1e5x", "v1e5", "1e-05"]
    }
    assert load_params(path=REPO / "params.yaml") == yaml.safe_load((REPO / "params.yaml").read_text())


def test_a_folder_given_as_an_image_is_named_a_folder(tmp_path):
    from medrestore.core.io import InputError, read_image

    with pytest.raises(InputError, match="a folder, not an image file.*Fix:"):
        read_image(tmp_path)
