"""The dataset registry: every entry complete, each layout parsed, the unknown-checksum policy.

The layouts are rebuilt in miniature from real CHASE_DB1 pixels, in each dataset's own file
formats (DRIVE: TIFF + GIF, HRF: JPEG with ``.JPG`` too + TIFF, STARE: gzipped PPM).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import re
import shutil
import urllib.parse
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medrestore.core.io import InputError, read_image, sha256_file
from medrestore.data.sources import (
    DATASETS,
    Dataset,
    SourceImage,
    UnverifiedFilesWarning,
    gather,
    load_mask,
)

FUNDUS = {"chase_db1", "drive", "stare", "hrf"}


def _gather(names, tmp_path, mirror, **kw):
    kw.setdefault("allow_network", False)
    return gather(names, tmp_path / "out", mirror=mirror, folder=tmp_path / "none", cache_dir=tmp_path / "cache", **kw)


@pytest.fixture(scope="module")
def pixels(chase_dir):
    """Small real image, vessel mask and FOV (from the image) to write in each dataset's formats."""
    img = read_image(chase_dir / "Image_01L.jpg")[200:296, 200:280]
    ves = read_image(chase_dir / "Image_01L_1stHO.png", "L")[200:296, 200:280]
    fov = np.where(img[..., 0] > 20, 255, 0).astype(np.uint8)
    return img, ves, fov


def _save(path: Path, array: np.ndarray, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


# --------------------------------------------------------------------------- entries
def test_every_entry_is_complete_and_consistent():
    assert FUNDUS | {"sample", "sample_histology"} <= set(DATASETS)
    for key, ds in DATASETS.items():
        assert ds.name == key and ds.description and ds.licence and ds.citation and callable(ds.parse), key
        assert ds.homepage and urllib.parse.urlsplit(ds.homepage).scheme == "https", key
        for arch in ds.archives():
            assert urllib.parse.urlsplit(arch.url).scheme == "https", key
            assert arch.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", arch.sha256), key
        if ds.skimage:  # built-in samples: nothing to download or verify
            assert ds.url is None and not ds.files and ds.checksums() is None
            continue
        assert ds.files, f"{key}: list the files the dataset holds"
        known = ds.checksums()
        assert (known is None) == (ds.checksums_file is None), key
        for rel, digest in (known or {}).items():
            assert re.fullmatch(r"[0-9a-f]{64}", digest) and ds.expects(rel), (key, rel)
    # the fundus datasets' real addresses and citations
    assert DATASETS["drive"].url is None and "drive.grand-challenge.org" in DATASETS["drive"].homepage
    assert "Staal" in DATASETS["drive"].citation and "2004" in DATASETS["drive"].citation
    assert [a.url.rsplit("/", 1)[1] for a in DATASETS["stare"].archives()] == [
        "stare-images.tar", "labels-ah.tar", "labels-vk.tar"]
    assert "Hoover" in DATASETS["stare"].citation and "2000" in DATASETS["stare"].citation
    assert DATASETS["hrf"].url.endswith("/fundus-images/all.zip") and "Budai" in DATASETS["hrf"].citation
    assert DATASETS["chase_db1"].url.endswith("CHASEDB1.zip") and DATASETS["chase_db1"].licence == "CC BY 4.0"
    assert DATASETS["sample_histology"].modality == "histology"
    assert {k for k, d in DATASETS.items() if d.checksums_file is None and not d.skimage} == {"drive", "stare", "hrf"}


def test_chase_checksums_cover_the_shared_mirror(chase_dir):
    known = DATASETS["chase_db1"].checksums()
    shipped = dict(
        reversed(line.split()) for line in (chase_dir / "SHA256SUMS").read_text().splitlines() if line.strip()
    )
    assert known == shipped


def test_as_dict_includes_the_fov(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    rec = SourceImage(id="d/a", dataset="d", image=tmp_path / "a.png", fov=tmp_path / "a.png")
    assert rec.as_dict(tmp_path)["fov"] == "a.png"
    assert SourceImage(id="d/a", dataset="d", image=tmp_path / "a.png").as_dict(tmp_path)["fov"] is None


# --------------------------------------------------------------------------- samples
def test_histology_sample_is_its_own_source(tmp_path):
    import skimage.data

    (rec,) = _gather(["sample_histology"], tmp_path, tmp_path)
    assert rec.id == "sample_histology/immunohistochemistry" and rec.dataset == "sample_histology"
    assert np.array_equal(read_image(rec.image), skimage.data.immunohistochemistry())
    both = _gather(["sample", "sample_histology"], tmp_path / "b", tmp_path)
    assert [r.id for r in both] == ["sample/retina", "sample_histology/immunohistochemistry"]


# --------------------------------------------------------------------------- layouts
def _drive_tree(root: Path, pixels) -> None:
    img, ves, fov = pixels
    for split, number in (("training", "21"), ("test", "01")):
        _save(root / split / "images" / f"{number}_{split}.tif", img, "TIFF")
        _save(root / split / "1st_manual" / f"{number}_manual1.gif", ves, "GIF")
        _save(root / split / "mask" / f"{number}_{split}_mask.gif", fov, "GIF")
    _save(root / "test" / "2nd_manual" / "01_manual2.gif", 255 - ves, "GIF")


def test_drive_layout_with_fov_masks(tmp_path, pixels):
    img, ves, fov = pixels
    mirror = tmp_path / "mirror"
    _drive_tree(mirror / "drive" / "DRIVE", pixels)  # unpacked with its top folder: the root is found
    (mirror / "drive" / "DRIVE" / "readme.txt").write_text("not a dataset file")
    with pytest.warns(UnverifiedFilesWarning, match=r"using 7 files of 'drive' unverified"):
        records = _gather(["drive"], tmp_path, mirror, allow_unverified=True)
    assert [r.id for r in records] == ["drive/21_training", "drive/01_test"]
    train, test = records
    assert train.vessels_2nd is None and test.vessels_2nd.name == "01_manual2.gif"
    for r in records:
        assert np.array_equal(read_image(r.image), img)
        assert np.array_equal(load_mask(r.vessels), ves > 127)
        assert np.array_equal(load_mask(r.fov), fov > 127)
    assert records[1].as_dict(tmp_path / "out")["fov"] == "drive/test/mask/01_test_mask.gif"
    # the unverified copy is on record, digest by digest, ready to be pinned
    sums = (tmp_path / "out" / "drive" / "SHA256SUMS").read_text().splitlines()
    assert len(sums) == 7 and not (tmp_path / "out" / "drive" / "readme.txt").exists()
    for line in sums:
        digest, rel = line.split("  ")
        assert sha256_file(tmp_path / "out" / "drive" / rel) == digest


def test_unverified_dataset_is_refused_by_default(tmp_path, pixels):
    mirror = tmp_path / "mirror"
    _drive_tree(mirror / "drive", pixels)
    with pytest.raises(InputError, match=r"mirror/drive: dataset 'drive' has no pinned checksums, so its 7 files "
                                         r"cannot be verified\. Fix: set download\.allow_unverified: "
                                         r"true.*drive\.sha256"):
        _gather(["drive"], tmp_path, mirror)


def test_dataset_without_direct_download_says_where_to_get_it(tmp_path):
    with pytest.raises(InputError,
                       match=r"'drive' is not in the mirror folder and has no direct download.*grand-challenge"):
        _gather(["drive"], tmp_path, tmp_path / "empty", allow_network=True)
    with pytest.raises(InputError, match=r"'hrf' is not in the mirror folder and downloading is off.*Fix"):
        _gather(["hrf"], tmp_path, tmp_path / "empty")


def test_hrf_layout_with_upper_case_extensions(tmp_path, pixels):
    img, ves, fov = pixels
    root = tmp_path / "mirror" / "hrf"
    for stem, ext in (("01_dr", "JPG"), ("01_h", "jpg")):  # HRF's DR images are .JPG
        _save(root / "images" / f"{stem}.{ext}", img, "JPEG")
        _save(root / "manual1" / f"{stem}.tif", ves, "TIFF")
        _save(root / "mask" / f"{stem}_mask.tif", np.dstack([fov] * 3), "TIFF")
    with pytest.warns(UnverifiedFilesWarning):
        records = _gather(["hrf"], tmp_path, tmp_path / "mirror", allow_unverified=True)
    assert [r.id for r in records] == ["hrf/01_dr", "hrf/01_h"]
    for r in records:
        assert r.image.suffix in (".JPG", ".jpg") and r.vessels_2nd is None
        assert np.array_equal(load_mask(r.vessels), ves > 127) and np.array_equal(load_mask(r.fov), fov > 127)


def test_stare_layout_from_gzipped_ppm(tmp_path, pixels):
    img, ves, _ = pixels
    root = tmp_path / "mirror" / "stare"
    root.mkdir(parents=True)

    def ppm_gz(path: Path, array: np.ndarray) -> None:
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="PPM")
        path.write_bytes(gzip.compress(buf.getvalue(), mtime=0))

    ppm_gz(root / "im0001.ppm.gz", img)
    ppm_gz(root / "im0001.ah.ppm.gz", ves)
    ppm_gz(root / "im0001.vk.ppm.gz", 255 - ves)
    ppm_gz(root / "im0002.ppm.gz", img[::-1])  # one image without labels
    with pytest.warns(UnverifiedFilesWarning):
        records = _gather(["stare"], tmp_path, tmp_path / "mirror", allow_unverified=True)
    assert [r.id for r in records] == ["stare/im0001", "stare/im0002"]
    first, second = records
    assert first.image.name == "im0001.png" and np.array_equal(read_image(first.image), img)
    assert np.array_equal(load_mask(first.vessels),
                          ves > 127) and np.array_equal(load_mask(first.vessels_2nd), ves <= 127)
    assert second.vessels is None and second.fov is None


def test_gzip_bomb_in_stare_is_refused(tmp_path, monkeypatch):
    from medrestore.data import sources

    monkeypatch.setattr(sources, "MAX_GUNZIP_BYTES", 10_000)
    root = tmp_path / "mirror" / "stare"
    root.mkdir(parents=True)
    (root / "im0001.ppm.gz").write_bytes(gzip.compress(b"P6 100 100 255\n" + bytes(30_000)))
    with pytest.warns(UnverifiedFilesWarning), pytest.raises(InputError,
                                                             match=r"im0001\.ppm\.gz: decompresses to more"):
        _gather(["stare"], tmp_path, tmp_path / "mirror", allow_unverified=True)


# --------------------------------------------------------------------------- policy for chase_db1 (strict)
def test_chase_files_beyond_the_pinned_list_are_left_out_unless_opted_in(tmp_path, chase_dir):
    mirror = tmp_path / "mirror" / "chase_db1"
    mirror.mkdir(parents=True)
    for name in ("Image_01L.jpg", "Image_01L_1stHO.png", "Image_01L_2ndHO.png"):
        shutil.copy(chase_dir / name, mirror / name)
    shutil.copy(chase_dir / "Image_02R.jpg", mirror / "Image_15L.jpg")  # a file beyond the archive: no pinned checksum
    with pytest.warns(UnverifiedFilesWarning, match=r"left out 1 files of 'chase_db1'.*Image_15L\.jpg"):
        records = _gather(["chase_db1"], tmp_path, mirror.parent, allow_partial=True)
    assert [r.id for r in records] == ["chase_db1/Image_01L"]
    assert not (tmp_path / "out" / "chase_db1" / "SHA256SUMS").exists()
    with pytest.warns(UnverifiedFilesWarning, match="using 1 files"):
        records = _gather(["chase_db1"], tmp_path / "b", mirror.parent, allow_unverified=True, allow_partial=True)
    assert [r.id for r in records] == ["chase_db1/Image_01L", "chase_db1/Image_15L"]
    # allow_unverified never lets a *wrong* pinned file through
    (mirror / "Image_01L_2ndHO.png").write_bytes(b"tampered")
    with pytest.raises(InputError, match=r"Image_01L_2ndHO\.png: checksum mismatch"):
        _gather(["chase_db1"], tmp_path / "c", mirror.parent, allow_unverified=True, allow_partial=True)


def test_pinned_dataset_warns_about_nothing_when_complete(tmp_path, chase_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        records = _gather(["chase_db1"], tmp_path, chase_dir.parent)
    assert len(records) == 28


@pytest.mark.parametrize("left_out", ["Image_07R.jpg", "Image_07R_1stHO.png"])
def test_a_pinned_dataset_missing_a_file_is_refused_naming_it(tmp_path, chase_dir, left_out):
    from medrestore.data.sources import IncompleteDatasetWarning

    mirror = tmp_path / "mirror" / "chase_db1"
    mirror.mkdir(parents=True)
    for p in chase_dir.iterdir():
        if p.name != left_out:
            (mirror / p.name).symlink_to(p)
    with pytest.raises(InputError,
                       match=rf"incomplete: 1 of its 84 pinned files are missing \({left_out}\).*Fix:.*allow_partial"):
        _gather(["chase_db1"], tmp_path, mirror.parent)
    with pytest.warns(IncompleteDatasetWarning, match=left_out):
        records = _gather(["chase_db1"], tmp_path / "b", mirror.parent, allow_partial=True)
    if left_out.endswith(".jpg"):
        assert len(records) == 27
    else:
        assert next(r for r in records if r.id == "chase_db1/Image_07R").vessels is None


# --------------------------------------------------------------------------- registering one more
def test_registering_a_dataset_is_one_entry(tmp_path, monkeypatch, chase_dir):
    def parse(folder: Path) -> list[SourceImage]:
        return [SourceImage(id=f"toy/{p.stem}", dataset="toy", image=p) for p in sorted(folder.glob("*.jpg"))]

    monkeypatch.setitem(DATASETS, "toy", Dataset(
        name="toy", description="two eyes", url=None, licence="CC BY 4.0", citation="me",
        parse=parse, homepage="https://example.org/toy", files=("*.jpg",),
    ))
    (tmp_path / "mirror" / "toy").mkdir(parents=True)
    for name in ("Image_01L.jpg", "Image_02R.jpg"):
        shutil.copy(chase_dir / name, tmp_path / "mirror" / "toy" / name)
    with pytest.warns(UnverifiedFilesWarning):
        records = _gather(["toy"], tmp_path, tmp_path / "mirror", allow_unverified=True)
    assert [r.id for r in records] == ["toy/Image_01L", "toy/Image_02R"]
    with pytest.raises(InputError, match=r"unknown source 'nope'.*sample_histology.*toy"):
        _gather(["nope"], tmp_path, tmp_path / "mirror")
    replaced = dataclasses.replace(DATASETS["toy"], files=("*.png",))
    monkeypatch.setitem(DATASETS, "toy", replaced)
    with pytest.raises(InputError, match=r"mirror/toy: holds none of the files expected for dataset 'toy' \(\*\.png\)"):
        _gather(["toy"], tmp_path / "x", tmp_path / "mirror", allow_unverified=True)
