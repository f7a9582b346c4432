"""The prepare stage on CHASE_DB1: the papers' crop/resize modes, shipped FOV masks, both observers'
vessel masks, grey output, and bad input that stops with the file's name and leaves earlier
outputs untouched."""

import shutil

import numpy as np
import pytest

from medrestore.core.io import InputError, atomic_dir, read_image
from medrestore.data.fov import detect_fov, fov_bbox
from medrestore.data.prepare import prepare_sources
from medrestore.data.sources import gather


@pytest.fixture(scope="module")
def chase_sources(tmp_path_factory, chase_dir):
    root = tmp_path_factory.mktemp("chase_sources")
    recs = gather(["chase_db1"], root, mirror=chase_dir.parent, folder=root, cache_dir=root / "c", allow_network=False)
    return {"images": [r.as_dict(root) for r in recs[:2]]}, root


def _prep(chase_sources, out, **kw):
    manifest, root = chase_sources
    args = {"size": 256, "mode": "border_centre", "fov_threshold": 0.1} | kw
    return prepare_sources(manifest, root, out, **args)


def test_every_source_keeps_its_id_dataset_vessels_of_both_observers_and_fov(chase_sources, tmp_path):
    result = _prep(chase_sources, tmp_path)
    for src, e in zip(chase_sources[0]["images"], result["images"]):
        assert (e["id"], e["dataset"], e["fov_source"]) == (src["id"], "chase_db1", "detected")
        v1 = read_image(tmp_path / e["vessels"], "L") > 127
        v2 = read_image(tmp_path / e["vessels_2nd"], "L") > 127
        fov = read_image(tmp_path / e["fov"], "L") > 127
        # Two observers, one vessel tree: they mostly agree, never exactly.
        assert 0.5 < (v1 & v2).sum() / (v1 | v2).sum() < 0.99
        assert (v2 & ~fov).sum() / v2.sum() < 0.01


def test_centre_crop_is_native_pixels_and_refuses_images_smaller_than_the_crop(chase_sources, tmp_path):
    manifest, root = chase_sources
    result = _prep(chase_sources, tmp_path / "a", mode="centre_crop", size=512)
    src = read_image(root / manifest["images"][0]["image"])
    h, w = src.shape[:2]
    top, left = (h - 512) // 2, (w - 512) // 2
    assert np.array_equal(read_image(tmp_path / "a" / result["images"][0]["image"]),
                          src[top : top + 512, left : left + 512])
    with pytest.raises(InputError,
                       match=r"Image_01L\.jpg: the image is 999x960, smaller than the 1696x1696 centre crop.*Fix"):
        _prep(chase_sources, tmp_path / "b", mode="centre_crop", size=1696)


def _half_disc_fov(chase_sources):
    """A dataset-style FOV mask for the first image: its detected disc cut to the left half
    (a bounding box twice as tall as wide, which no real CHASE FOV has)."""
    from PIL import Image

    manifest, root = chase_sources
    src = read_image(root / manifest["images"][0]["image"])
    own = detect_fov(src)
    _, _, left, right = fov_bbox(own)
    own[:, (left + right) // 2 :] = False
    (root / "masks").mkdir(exist_ok=True)
    Image.fromarray(own.astype(np.uint8) * 255).save(root / "masks" / "own.png")
    return src, own, {"images": [dict(manifest["images"][0], fov="masks/own.png")]}


def test_border_mode_stretches_the_fov_box_to_the_frame_border_centre_keeps_the_aspect(chase_sources, tmp_path):
    from PIL import Image

    src, own, manifest = _half_disc_fov(chase_sources)
    root = chase_sources[1]
    border = prepare_sources(manifest, root, tmp_path / "b", size=256, mode="border", fov_threshold=0.1)["images"][0]
    centre = prepare_sources(manifest, root, tmp_path / "c", size=256, mode="border_centre",
                             fov_threshold=0.1)["images"][0]
    fb = read_image(tmp_path / "b" / border["fov"], "L") > 127
    fc = read_image(tmp_path / "c" / centre["fov"], "L") > 127
    t, b, l, r = fov_bbox(own)
    expected = np.asarray(Image.fromarray(src[t:b, l:r]).resize((256, 256), Image.Resampling.LANCZOS))
    assert np.array_equal(read_image(tmp_path / "b" / border["image"]), expected)
    assert fov_bbox(fb) == (0, 256, 0, 256)
    # A half disc fills pi/4 of its box; the centre square of that box keeps its fuller middle.
    assert fb.mean() == pytest.approx(np.pi / 4, abs=0.03) and fc.mean() > fb.mean() + 0.05


def test_resize_to_64_grey_is_three_equal_channels(chase_sources, tmp_path):
    result = _prep(chase_sources, tmp_path, mode="resize", size=64, grey=True)
    img = read_image(tmp_path / result["images"][0]["image"])
    assert img.shape == (64, 64, 3) and result["grey"] is True
    assert np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])
    assert img.std() > 10


def test_a_shipped_fov_mask_is_used_instead_of_detection(chase_sources, tmp_path):
    _, _, manifest = _half_disc_fov(chase_sources)
    result = prepare_sources(manifest, chase_sources[1], tmp_path, size=256, mode="centre", fov_threshold=0.1)
    e = result["images"][0]
    fov = read_image(tmp_path / e["fov"], "L") > 127
    assert e["fov_source"] == "shipped"
    assert fov[:, :100].mean() > 0.5 and not fov[:, 140:].any()


@pytest.mark.parametrize("damage", ["zero_bytes", "truncated", "not_an_image"])
def test_a_broken_source_image_stops_prepare_naming_it_and_leaves_earlier_outputs(chase_sources, tmp_path, damage):
    manifest, root = chase_sources
    broken = tmp_path / "sources"
    shutil.copytree(root, broken)
    victim = broken / manifest["images"][1]["image"]
    data = victim.read_bytes()
    victim.write_bytes({"zero_bytes": b"", "truncated": data[: len(data) // 3],
                        "not_an_image": b"hello, not a jpeg\n" * 50}[damage])
    out = tmp_path / "prepared"
    out.mkdir()
    (out / "manifest.json").write_text("earlier output\n")
    with pytest.raises(InputError, match=rf"{victim.name}: .*Fix"), atomic_dir(out) as tmp:
        prepare_sources(manifest, broken, tmp, size=128, mode="border_centre", fov_threshold=0.1)
    assert [p.name for p in out.iterdir()] == ["manifest.json"]
    assert (out / "manifest.json").read_text() == "earlier output\n"


def test_a_mask_of_the_wrong_size_names_the_mask(chase_sources, tmp_path):
    manifest, root = chase_sources
    bad = dict(manifest["images"][0], fov=manifest["images"][1]["vessels"])
    small = read_image(root / bad["fov"], "L")[:100, :100]
    from PIL import Image

    Image.fromarray(small).save(root / "small_mask.png")
    bad["fov"] = "small_mask.png"
    with pytest.raises(InputError, match=r"small_mask\.png: the FOV mask is 100x100 but its image is 999x960.*Fix"):
        prepare_sources({"images": [bad]}, root, tmp_path, size=128, mode="border_centre", fov_threshold=0.1)


def test_unknown_mode_names_the_param(chase_sources, tmp_path):
    with pytest.raises(InputError, match=r"prepare\.mode is 'crop'.*centre_crop"):
        _prep(chase_sources, tmp_path, mode="crop")
