import shutil

import numpy as np
import pytest

from medrestore.core.io import InputError, read_image
from medrestore.data.sources import DATASETS, gather


def test_sample_source_writes_the_scikit_image_fundus(tmp_path, retina):
    records = gather(["sample"], tmp_path, mirror=tmp_path / "none", folder=tmp_path / "data", cache_dir=tmp_path / "c",
                     allow_network=False)
    assert [r.id for r in records] == ["sample/retina"]
    assert np.array_equal(read_image(records[0].image), retina)


def test_chase_from_mirror_keeps_masks_and_verifies_checksums(tmp_path, chase_dir):
    records = gather(["chase_db1"], tmp_path / "out", mirror=chase_dir.parent, folder=tmp_path,
                     cache_dir=tmp_path / "c", allow_network=False)
    assert len(records) == 28  # the mirror holds 01L..14R; the code assumes no fixed count
    r = records[0]
    assert (
        r.id == "chase_db1/Image_01L"
        and r.vessels.name == "Image_01L_1stHO.png"
        and r.vessels_2nd.name == "Image_01L_2ndHO.png"
    )
    assert set(DATASETS["chase_db1"].checksums()) >= {
        p.name for p in chase_dir.iterdir() if p.suffix in (".jpg", ".png")
    }


def test_chase_checksum_mismatch_names_the_file(tmp_path, chase_dir):
    mirror = tmp_path / "mirror" / "chase_db1"
    mirror.mkdir(parents=True)
    for p in list(chase_dir.glob("Image_01*"))[:6]:
        shutil.copy(p, mirror / p.name)
    bad = mirror / "Image_01L.jpg"
    data = bytearray(bad.read_bytes())
    data[1000] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"Image_01L\.jpg: checksum mismatch.*Fix"):
        gather(["chase_db1"], tmp_path / "out", mirror=mirror.parent, folder=tmp_path, cache_dir=tmp_path / "c",
               allow_network=False)


def test_missing_mirror_without_network_says_what_to_do(tmp_path):
    with pytest.raises(InputError, match="not in the mirror folder.*Fix"):
        gather(["chase_db1"], tmp_path / "out", mirror=tmp_path / "nowhere", folder=tmp_path, cache_dir=tmp_path / "c",
               allow_network=False)


def test_folder_source_reads_user_images_and_refuses_non_images(tmp_path, chase_dir):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    shutil.copy(chase_dir / "Image_02R.jpg", data / "sub" / "eye.jpg")
    records = gather(["folder"], tmp_path / "out", mirror=tmp_path, folder=data, cache_dir=tmp_path / "c",
                     allow_network=False)
    assert [r.id for r in records] == ["folder/sub__eye"]
    (data / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match=r"notes\.txt: not an image.*Fix"):
        gather(["folder"], tmp_path / "out2", mirror=tmp_path, folder=data, cache_dir=tmp_path / "c",
               allow_network=False)


def test_unknown_source_lists_known_ones(tmp_path):
    with pytest.raises(InputError, match="unknown source 'nope'.*chase_db1"):
        gather(["nope"], tmp_path, mirror=tmp_path, folder=tmp_path, cache_dir=tmp_path, allow_network=False)
