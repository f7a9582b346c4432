"""The corrupt stage's output contract, on CHASE_DB1 and the scikit-image retina: SR shapes,
per-patch params that replay, image-level corruption cut where patchify cut, FOV respected,
unpaired domains from disjoint images, grey data, byte-identical reruns, clear errors."""

import json

import numpy as np
import pytest

from medrestore.core.io import InputError, read_image
from medrestore.data.corrupt import corrupt_task, patch_seed, read_params
from medrestore.data.patches import patchify
from medrestore.data.prepare import prepare_sources
from medrestore.data.sources import gather
from medrestore.degradations import corrupt, sr_pair

P = 32
PATCH_ARGS = {"patch_size": P, "stride": 16, "min_fov_fraction": 0.8, "val_fraction": 0.25, "test_fraction": 0.25,
              "region_grid": 2}
NOISE = {"train": {"kind": "gaussian", "sigma_range": [0, 50]}, "test": {"s25": {"kind": "gaussian", "sigma": 25}}}
FUNDUS = {"kind": "chain", "steps": [{"kind": "fundus_random"}, {"kind": "cataract"}]}


def _prepare(root, names, *, count=None, size, grey=False):
    recs = gather(names, root / "sources", mirror=root.parent / "mirror", folder=root, cache_dir=root,
                  allow_network=False)
    manifest = {"images": [r.as_dict(root / "sources") for r in recs[:count]]}
    prepared = prepare_sources(manifest, root / "sources", root / "prepared", size=size, mode="border_centre",
                               fov_threshold=0.1, grey=grey)
    patchify(prepared, root / "prepared", root / "patches", seed=7, **PATCH_ARGS)
    return root


@pytest.fixture(scope="module")
def chase(tmp_path_factory, chase_dir):
    root = tmp_path_factory.mktemp("chase")
    (root.parent / "mirror").mkdir(exist_ok=True)
    link = root.parent / "mirror" / "chase_db1"
    if not link.exists():
        link.symlink_to(chase_dir)
    return _prepare(root, ["chase_db1"], count=8, size=128)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return _prepare(tmp_path_factory.mktemp("sample"), ["sample"], size=192)


def _run(root, name, spec, out=None, seed=11):
    out = out or root / "corrupt" / name
    rec = corrupt_task(root / "patches", out, task=name, spec=spec, seed=seed, prepared_dir=root / "prepared")
    return rec, out


def _meta(root):
    return json.loads((root / "patches" / "patches.json").read_text())


def _prepared_unit(root, unit):
    manifest = json.loads((root / "prepared" / "manifest.json").read_text())
    entry = next(e for e in manifest["images"] if e["id"] == unit["source_id"])
    t, b, l, r = unit["box"]
    image = read_image(root / "prepared" / entry["image"])[t:b, l:r]
    fov = read_image(root / "prepared" / entry["fov"], "L")[t:b, l:r] > 127
    return image, fov


def test_patch_level_outputs_align_with_the_clean_patches_and_replay_from_jsonl(chase):
    rec, out = _run(chase, "blind", NOISE)
    clean = np.load(chase / "patches" / "train.npy")
    noisy = np.load(out / "train.npy")
    rows = read_params(out / "train_params.jsonl")
    assert noisy.shape == clean.shape and noisy.dtype == np.uint8 and len(rows) == len(clean)
    assert rec["scale"] == 1 and rec["unpaired"] is False and rec["level"] == "patch"
    sigmas = np.array([r["params"]["sigma"] for r in rows])
    assert 0 <= sigmas.min() < 10 and 40 < sigmas.max() <= 50  # blind: spread over the range
    for i in (0, len(clean) // 3, len(clean) - 1):
        again, params = corrupt(clean[i], NOISE["train"], rows[i]["seed_words"])
        assert np.array_equal(again, noisy[i]) and params == rows[i]["params"]
        # The measured noise of the patch follows its own recorded sigma.
        resid = noisy[i].astype(float) - clean[i]
        unclipped = (clean[i] > 3 * sigmas[i] + 1) & (clean[i] < 254 - 3 * sigmas[i])
        if sigmas[i] > 5 and unclipped.sum() > 500:
            assert resid[unclipped].std() == pytest.approx(sigmas[i], rel=0.15)


def test_sr_inputs_are_the_low_resolution_patches_and_test_images(chase):
    spec = {
        "train": {"kind": "downscale", "scale": 4},
        "test": {
            "x4": {"kind": "downscale", "scale": 4},
            "x4-blur": {"kind": "blur_downscale", "scale": 4, "sigma": 1.5},
        },
    }
    rec, out = _run(chase, "sr", spec)
    clean = np.load(chase / "patches" / "val.npy")
    lr = np.load(out / "val.npy")
    assert rec["scale"] == 4 and lr.shape == (len(clean), P // 4, P // 4, 3)
    for i in (0, len(clean) - 1):
        hr, expect, _ = sr_pair(clean[i], spec["train"], patch_seed(11, "sr", "val", i))
        assert np.array_equal(hr, clean[i]) and np.array_equal(lr[i], expect)
        # Bicubic x4 keeps the patch's mean colour.
        assert np.abs(lr[i].mean(axis=(0, 1)) - clean[i].mean(axis=(0, 1)).astype(float)).max() < 3
    for case in rec["test"]:
        full = read_image(chase / "patches" / "test" / "images" / case["file"].split("/")[-1])
        small = read_image(out / case["file"])
        assert small.shape[:2] == (full.shape[0] // 4, full.shape[1] // 4)
        assert case["hr_box"] == [0, small.shape[0] * 4, 0, small.shape[1] * 4]


def test_a_patch_size_that_the_scale_does_not_divide_is_refused(chase, tmp_path):
    spec = {"train": {"kind": "downscale", "scale": 3}, "test": {"x3": {"kind": "downscale", "scale": 3}}}
    with pytest.raises(InputError, match=r"patchify\.patch_size \(32\) is not a multiple of 3.*Fix"):
        _run(chase, "sr3", spec, out=tmp_path / "sr3")
    mixed = {"train": {"kind": "downscale", "scale": 4}, "test": {"x2": {"kind": "downscale", "scale": 2}}}
    with pytest.raises(InputError, match="another factor than train"):
        _run(chase, "mixed", mixed, out=tmp_path / "mixed")


def test_denoise_sr_chain_adds_sigma_25_noise_to_the_x4_input(chase):
    chain = {"kind": "chain", "steps": [{"kind": "downscale", "scale": 4}, {"kind": "gaussian", "sigma": 25}]}
    rec, out = _run(chase, "dsr", {"train": chain, "test": {"x4-s25": chain}})
    clean = np.load(chase / "patches" / "train.npy")
    noisy = np.load(out / "train.npy")
    bicubic = np.stack([corrupt(c, {"kind": "downscale", "scale": 4}, [0])[0] for c in clean])
    resid = noisy.astype(float) - bicubic
    inside = (bicubic > 80) & (bicubic < 175)  # 3 sigma from both ends: no clipping
    assert rec["scale"] == 4 and noisy.shape[1:] == (8, 8, 3)
    assert resid[inside].std() == pytest.approx(25, rel=0.05)


def test_image_level_degrades_whole_units_in_their_fov_and_cuts_patchify_s_positions(sample):
    rec, out = _run(sample, "enh", {"level": "image", "train": FUNDUS, "test": {"c": {"kind": "cataract"}}})
    meta = _meta(sample)
    index = np.load(sample / "patches" / "train_index.npy")
    clean = np.load(sample / "patches" / "train.npy")
    degraded = np.load(out / "train.npy")
    rows = read_params(out / "train_params.jsonl")
    for k, unit in enumerate(meta["units"]["train"]):
        image, fov = _prepared_unit(sample, unit)
        mine = np.flatnonzero(index[:, 0] == k)
        words = rows[mine[0]]["seed_words"]
        assert words == patch_seed(11, "enh", "train", k) and all(rows[i]["seed_words"] == words for i in mine)
        whole, params = corrupt(image, FUNDUS, words, fov)
        assert params == rows[mine[0]]["params"]
        assert not whole[~fov].any()  # cofe-Net: the result times the FOV mask
        t, _, l, _ = unit["box"]
        for i in mine[:: max(1, len(mine) // 5)]:
            y, x = index[i, 1] - t, index[i, 2] - l
            assert (rows[i]["y"], rows[i]["x"], rows[i]["unit"]) == (index[i, 1], index[i, 2], unit["id"])
            assert np.array_equal(degraded[i], whole[y : y + P, x : x + P])
            assert np.array_equal(clean[i], image[y : y + P, x : x + P])
    # Degrading the whole photograph is not the same as degrading each patch on its own.
    alone = corrupt(clean[0], FUNDUS, rows[0]["seed_words"])[0]
    assert not np.array_equal(alone, degraded[0])
    for case in rec["test"]:
        fov = read_image(sample / "patches" / "test" / "fov" / case["file"].split("/")[-1], "L") > 127
        img = read_image(out / case["file"])
        assert not img[~fov].any() and img[fov].mean() > 10


def test_patch_level_fundus_kinds_get_each_patch_s_fov(chase):
    spec = {"train": {"kind": "fundus_hole"}, "test": {"h": {"kind": "fundus_hole"}}}
    _, out = _run(chase, "hole", spec)
    meta = _meta(chase)
    index = np.load(chase / "patches" / "val_index.npy")
    degraded = np.load(out / "val.npy")
    edge = []
    for i, (k, y, x) in enumerate(index):
        _, fov = _prepared_unit(chase, meta["units"]["val"][k])
        t, _, l, _ = meta["units"]["val"][k]["box"]
        pf = fov[y - t : y - t + P, x - l : x - l + P]
        if not pf.all():
            edge.append(i)
            assert not degraded[i][~pf].any()
    assert edge  # min_fov_fraction 0.8 keeps patches that cross the FOV border


@pytest.mark.parametrize("which", ["chase", "sample"])
def test_unpaired_domains_come_from_disjoint_images_and_val_test_stay_paired(which, request):
    root = request.getfixturevalue(which)
    spec = {"level": "image", "unpaired": True, "train": FUNDUS, "test": {"c": {"kind": "cataract"}}}
    rec, out = _run(root, "unp", spec)
    meta = _meta(root)
    domain = np.load(out / "train_domain.npy")
    index = np.load(root / "patches" / "train_index.npy")
    units = meta["units"]["train"]
    assert domain.dtype == np.uint8 and domain.shape == (len(index),) and set(np.unique(domain)) == {0, 1}
    d = rec["domains"]
    assert d["by"] == ("source" if which == "chase" else "region")
    assert not set(d["clean"]) & set(d["degraded"]) and d["clean"] and d["degraded"]
    key = "source_id" if d["by"] == "source" else "id"
    assert sorted(d["clean"] + d["degraded"]) == sorted({u[key] for u in units})
    for side, value in (("clean", 0), ("degraded", 1)):
        owners = {units[k][key] for k in index[domain == value, 0]}
        assert owners == set(d[side])
    assert d["counts"] == {"clean": int((domain == 0).sum()), "degraded": int((domain == 1).sum())}
    assert np.load(out / "val.npy").shape == np.load(root / "patches" / "val.npy").shape
    assert {c["id"] for c in rec["test"]} == {e["id"] for e in meta["test"]}
    # The split is seeded: the same seed gives the same halves, and it does not depend on the spec.
    again, _ = _run(root, "unp", {**spec, "train": {"kind": "cataract"}}, out=out.parent / "unp-again")
    assert again["domains"] == rec["domains"]


def test_reruns_are_byte_identical(sample, tmp_path):
    spec = {"level": "image", "unpaired": True, "train": FUNDUS, "test": {"c": FUNDUS}}
    _run(sample, "twice", spec, out=tmp_path / "a")
    _run(sample, "twice", spec, out=tmp_path / "b")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) >= 7
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_grey_data_stays_grey_through_the_corruption(tmp_path_factory):
    root = _prepare(tmp_path_factory.mktemp("grey"), ["sample"], size=128, grey=True)
    clean = np.load(root / "patches" / "train.npy")
    assert np.array_equal(clean[..., 0], clean[..., 1]) and np.array_equal(clean[..., 0], clean[..., 2])
    rec, out = _run(root, "g", NOISE)
    noisy = np.load(out / "train.npy")
    assert rec["grey"] and np.array_equal(noisy[..., 0], noisy[..., 2]) and not np.array_equal(noisy, clean)
    case = rec["test"][0]
    img = read_image(out / case["file"])
    assert np.array_equal(img[..., 0], img[..., 1])


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"train": {"kind": "gaussian", "sigma": 5}, "test": {"a": {"kind": "gaussian", "sigma": 5}}, "levle": "image"},
         "unknown keys"),
        ({"train": {"kind": "gaussian", "sigma": 5}, "test": {"a": {"kind": "gaussian", "sigma": 5}}, "level": "whole"},
         "level is 'whole'"),
        ({"train": {"kind": "gaussain", "sigma": 5}, "test": {"a": {"kind": "gaussian", "sigma": 5}}},
         "unknown corruption kind 'gaussain'"),
        ({"train": {"kind": "gaussian", "sigma": 5}}, "needs a `train` spec and a `test` mapping"),
    ],
)
def test_bad_task_specs_name_the_params_entry(chase, tmp_path, spec, message):
    with pytest.raises(InputError, match=rf"params\.yaml: corrupt\.tasks\.bad.*{message}.*Fix"):
        _run(chase, "bad", spec, out=tmp_path / "bad")
