"""The download stage's own checks (medrestore.pipeline.download)."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from medrestore.core.io import InputError
from medrestore.pipeline.download import check_folder_names


def test_two_images_named_alike_but_for_the_extension_are_named_in_the_error(tmp_path, chase_dir):
    src = chase_dir / "Image_01L.jpg"
    shutil.copy(src, tmp_path / "Image_11L.jpg")
    Image.open(src).save(tmp_path / "Image_11L.png")
    (tmp_path / "sub").mkdir()
    shutil.copy(src, tmp_path / "sub" / "Image_11L.jpg")  # another folder: another source, fine
    with pytest.raises(InputError) as err:
        check_folder_names(tmp_path)
    msg = str(err.value)
    assert "Image_11L.jpg" in msg and "Image_11L.png" in msg and "Fix:" in msg


def test_distinct_names_pass(tmp_path, chase_dir):
    shutil.copy(chase_dir / "Image_01L.jpg", tmp_path / "a.jpg")
    shutil.copy(chase_dir / "Image_01L.jpg", tmp_path / "b.jpg")
    check_folder_names(tmp_path)
