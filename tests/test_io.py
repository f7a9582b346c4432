import json
import os

import numpy as np
import pytest
from PIL import Image

from medrestore.io import InputError, atomic_dir, atomic_path, read_image, write_json_atomic, write_png_atomic


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
