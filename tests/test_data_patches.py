import numpy as np
import pytest

from conftest import prepare_chase
from medrestore.core.io import InputError, read_image
from medrestore.data.corrupt import corrupt_task, read_params
from medrestore.data.patches import npy_writer, patch_positions, patchify, read_rows
from medrestore.data.prepare import prepare_sources
from medrestore.data.sources import gather
from medrestore.degradations import corrupt


@pytest.fixture(scope="module")
def prepared_sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    recs = gather(["sample"], root / "sources", mirror=root, folder=root, cache_dir=root, allow_network=False)
    manifest = {"images": [r.as_dict(root / "sources") for r in recs]}
    return prepare_sources(manifest, root / "sources", root / "prepared", size=256, mode="border_centre",
                           fov_threshold=0.1), root


@pytest.fixture(scope="module")
def prepared_chase(tmp_path_factory, chase_dir):
    root = tmp_path_factory.mktemp("chase")
    return prepare_chase(root, chase_dir, 192), root


def test_patch_positions_respect_fov_and_box():
    fov = np.zeros((100, 100), bool)
    fov[20:80, 20:80] = True
    pos = patch_positions(fov, (0, 100, 0, 50), 20, 10, 1.0)
    assert len(pos) > 0
    for y, x in pos:
        assert fov[y : y + 20, x : x + 20].all() and x + 20 <= 50


def test_single_image_split_by_disjoint_regions(prepared_sample):
    manifest, root = prepared_sample
    out = root / "patches"
    s = patchify(manifest, root / "prepared", out, seed=1, patch_size=24, stride=12, min_fov_fraction=0.8,
                 val_fraction=0.25, test_fraction=0.25, region_grid=2)
    splits = s["splits"]
    assert len(splits["train"]) == 2 and len(splits["val"]) == 1 and len(splits["test"]) == 1
    assert not set(splits["test"]) & set(splits["train"] + splits["val"])
    assert s["test"][0]["subject"] == s["test"][0]["id"]  # a region of the one image: its own subject
    train = np.load(out / "train.npy", mmap_mode="r")
    index = np.load(out / "train_index.npy")
    prepared = read_image(root / "prepared" / manifest["images"][0]["image"])
    test_box = s["test"][0]["box"]
    # Every train patch is pixel-identical to its source and lies outside the test region.
    for k in range(0, len(train), 17):
        _, y, x = index[k]
        assert np.array_equal(train[k], prepared[y : y + 24, x : x + 24])
        t, b, l, r = test_box
        assert y + 24 <= t or y >= b or x + 24 <= l or x >= r


def test_multi_image_split_by_image(prepared_chase):
    manifest, root = prepared_chase
    s = patchify(manifest, root / "prepared", root / "patches", seed=3, patch_size=32, stride=32, min_fov_fraction=0.9,
                 val_fraction=0.25, test_fraction=0.25, region_grid=2)
    sp = s["splits"]
    assert sorted(sp["train"] + sp["val"] + sp["test"]) == sorted(e["id"] for e in manifest["images"])
    assert len(sp["test"]) == 2 and len(sp["val"]) == 2
    assert all(e["vessels"] for e in s["test"])  # CHASE masks travel with the test images


def test_both_eyes_of_one_child_stay_in_one_split(prepared_chase):
    manifest, root = prepared_chase
    child = lambda image_id: image_id.rsplit("_", 1)[1][:-1]  # chase_db1/Image_03L -> 03  # noqa: E731
    for seed in range(6):
        s = patchify(manifest, root / "prepared", root / f"patches_s{seed}", seed=seed, patch_size=32, stride=64,
                     min_fov_fraction=0.9, val_fraction=0.25, test_fraction=0.25, region_grid=2)
        where = {}
        for split, ids in s["splits"].items():
            for i in ids:
                assert where.setdefault(child(i), split) == split, (seed, i, where)
        assert len(s["subjects"]["test"]) == 1 and len(s["splits"]["test"]) == 2
        # each test image names its subject, the unit the evaluation's statistics resample
        assert (
            [e["subject"] for e in s["test"]]
            == [f"chase_db1/{child(e['id'])}" for e in s["test"]]
            == s["subjects"]["test"] * 2
        )


def test_corrupt_task_is_replayable_per_patch(prepared_sample):
    manifest, root = prepared_sample
    out = root / "patches2"
    patchify(manifest, root / "prepared", out, seed=1, patch_size=24, stride=12, min_fov_fraction=0.8,
             val_fraction=0.25, test_fraction=0.25, region_grid=2)
    spec = {"train": {"kind": "gaussian", "sigma_range": [0, 50]}, "test": {"s25": {"kind": "gaussian", "sigma": 25}}}
    rec = corrupt_task(out, root / "c", task="denoise-blind", spec=spec, seed=5)
    clean = np.load(out / "train.npy")
    noisy = np.load(root / "c" / "train.npy")
    rows = read_params(root / "c" / "train_params.jsonl")
    assert len(rows) == len(clean) == len(noisy)
    from medrestore.data.corrupt import patch_seed

    for i in (0, len(clean) // 2, len(clean) - 1):
        assert rows[i]["seed_words"] == patch_seed(5, "denoise-blind", "train", i)
        again, p = corrupt(clean[i], spec["train"], patch_seed(5, "denoise-blind", "train", i))
        assert np.array_equal(again, noisy[i]) and p["sigma"] == pytest.approx(rows[i]["params"]["sigma"])
    case = rec["test"][0]
    test_clean = read_image(out / "test/images" / (case["file"].split("/")[-1]))
    replay, _ = corrupt(test_clean, case["spec"], case["seed_words"])
    assert np.array_equal(replay, read_image(root / "c" / case["file"]))


def test_npy_writer_and_read_rows_round_trip_real_patches(prepared_chase, tmp_path):
    manifest, root = prepared_chase
    image = read_image(root / "prepared" / manifest["images"][0]["image"])
    blocks = [np.stack([image[y : y + 16, x : x + 16] for x in range(0, 64, 16)]) for y in range(0, 48, 16)]
    whole = np.concatenate(blocks)
    with npy_writer(tmp_path / "a.npy", whole.shape) as w:
        for b in blocks:
            w.write(b)
    assert np.array_equal(np.load(tmp_path / "a.npy"), whole)
    assert np.array_equal(read_rows(tmp_path / "a.npy", 3, 9), whole[3:9])
    assert read_rows(tmp_path / "a.npy", 10, 99).shape == (2, 16, 16, 3)
    # A writer that does not fill every row leaves no file behind.
    with pytest.raises(AssertionError, match="wrote 4 rows of 12"), npy_writer(tmp_path / "b.npy", whole.shape) as w:
        w.write(blocks[0])
    assert not (tmp_path / "b.npy").exists()


def test_patches_json_lists_units_and_index_points_into_them(prepared_chase):
    manifest, root = prepared_chase
    s = patchify(manifest, root / "prepared", root / "patches_u", seed=3, patch_size=32, stride=16,
                 min_fov_fraction=0.9,
                 val_fraction=0.25, test_fraction=0.25, region_grid=2)
    by_id = {e["id"]: e for e in manifest["images"]}
    for split in ("train", "val"):
        units = s["units"][split]
        assert [u["id"] for u in units] == s["splits"][split]
        index = np.load(root / "patches_u" / f"{split}_index.npy")
        patches = np.load(root / "patches_u" / f"{split}.npy", mmap_mode="r")
        assert np.all(np.diff(index[:, 0]) >= 0)  # each unit's patches are contiguous, in unit order
        for k in (0, len(index) - 1):
            unit = units[index[k, 0]]
            _, y, x = index[k]
            image = read_image(root / "prepared" / by_id[unit["source_id"]]["image"])
            assert np.array_equal(patches[k], image[y : y + 32, x : x + 32])


def test_patch_larger_than_the_prepared_images_names_a_file_and_the_fix(prepared_sample, tmp_path):
    manifest, root = prepared_sample
    with pytest.raises(InputError,
                       match=r"retina\.png: the prepared images are 256x256, smaller than a 300x300 patch.*Fix"):
        patchify(manifest, root / "prepared", tmp_path / "p", seed=1, patch_size=300, stride=12, min_fov_fraction=0.8,
                 val_fraction=0.25, test_fraction=0.25, region_grid=2)
    assert not (tmp_path / "p").exists()


@pytest.fixture(scope="module")
def prepared_chase_both_ends(tmp_path_factory, chase_dir):
    """Children 01-03 (the published training half) and 11-12 (its test half), both eyes each."""
    root = tmp_path_factory.mktemp("chase_ends")
    ends = lambda recs: [r for r in recs if r.id.rsplit("_", 1)[1][:2] in ("01", "02", "03", "11", "12")]  # noqa: E731
    return prepare_chase(root, chase_dir, 128, keep=ends), root


def test_standard_split_keeps_chase_test_children_and_draws_validation_from_the_rest(prepared_chase_both_ends):
    manifest, root = prepared_chase_both_ends
    kw = dict(patch_size=32, stride=64, min_fov_fraction=0.9, val_fraction=0.25, test_fraction=0.25, region_grid=2)
    vals = set()
    for seed in range(4):
        s = patchify(manifest, root / "prepared", root / f"std{seed}", seed=seed, split="standard", **kw)
        assert s["split"] == "standard"
        assert s["subjects"]["test"] == ["chase_db1/11", "chase_db1/12"]  # whatever the seed
        assert s["splits"]["test"] == ["chase_db1/Image_11L", "chase_db1/Image_11R", "chase_db1/Image_12L",
                                       "chase_db1/Image_12R"]
        assert len(s["subjects"]["val"]) == 1 and len(s["splits"]["val"]) == 2  # round(0.25 * 3) subjects, both eyes
        assert set(s["subjects"]["train"]) | set(s["subjects"]["val"]) == {
            "chase_db1/01",
            "chase_db1/02",
            "chase_db1/03",
        }
        vals.add(s["subjects"]["val"][0])
    assert len(vals) > 1  # the validation children are drawn by the seed
    again = patchify(manifest, root / "prepared", root / "std0b", seed=0, split="standard", **kw)
    assert again["splits"] == patchify(manifest, root / "prepared", root / "std0c", seed=0, split="standard",
                                       **kw)["splits"]
    # the random split draws the test children too: some seed puts a training child in test
    drawn = [patchify(manifest, root / "prepared", root / f"rnd{seed}", seed=seed, split="random",
                      **kw)["subjects"]["test"]
             for seed in range(4)]
    assert any(set(t) - {"chase_db1/11", "chase_db1/12"} for t in drawn)


def test_unknown_split_names_the_param_and_the_fix(prepared_chase_both_ends, tmp_path):
    manifest, root = prepared_chase_both_ends
    with pytest.raises(InputError, match=r"patchify\.split is 'published'.*Fix: use 'standard' or 'random'"):
        patchify(manifest, root / "prepared", tmp_path / "p", seed=0, split="published", patch_size=32, stride=64,
                 min_fov_fraction=0.9, val_fraction=0.25, test_fraction=0.25, region_grid=2)


def test_patch_fov_masks_are_the_prepared_fov_at_each_patch(prepared_chase_both_ends):
    from medrestore.core.io import read_mask
    from medrestore.data.patches import load_fov

    manifest, root = prepared_chase_both_ends
    s = patchify(manifest, root / "prepared", root / "fovmasks", seed=0, split="standard", patch_size=32, stride=16,
                 min_fov_fraction=0.3, val_fraction=0.25, test_fraction=0.25, region_grid=2)
    by_id = {e["id"]: e for e in manifest["images"]}
    for split in ("train", "val"):
        masks, index = load_fov(root / "fovmasks", split), np.load(root / "fovmasks" / f"{split}_index.npy")
        assert masks.shape == (s["counts"][split], 32, 32) and masks.dtype == np.uint8
        assert 0 < masks.mean() < 1  # patches cross the FOV's edge
        for k in range(0, len(index), 23):
            u, y, x = index[k]
            fov = read_mask(root / "prepared" / by_id[s["units"][split][u]["source_id"]]["fov"])
            assert np.array_equal(masks[k], fov[y : y + 32, x : x + 32].astype(np.uint8))
