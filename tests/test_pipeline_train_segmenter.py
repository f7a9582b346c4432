"""medrestore.pipeline.train_segmenter: the train_segmenter stage on a prepared folder of CHASE_DB1
images (real images, two observers' manual masks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medrestore import vessels as V
from medrestore.core.io import InputError
from medrestore.pipeline.train_segmenter import resolve_binarize_rule, train_segmenter_stage
from vessels_data import one_torch_thread, prepared  # noqa: F401  (one_torch_thread: autouse fixture)


def _prepared_dir(chase_dir, root, stems, size=128, masks=True):
    """A prepared folder as the prepare stage writes it (manifest + PNGs; two observers' masks)."""
    from medrestore.core.io import write_json_atomic, write_png_atomic

    entries = []
    for stem in stems:
        img, fov, v1, v2 = prepared(chase_dir, stem, size)
        e = {"id": f"chase_db1/{stem}", "dataset": "chase_db1", "image": f"images/{stem}.png", "fov": f"fov/{stem}.png",
             "vessels": f"vessels/{stem}.png" if masks else None,
             "vessels_2nd": f"vessels_2nd/{stem}.png" if masks else None}
        write_png_atomic(root / e["image"], img)
        write_png_atomic(root / e["fov"], fov.astype(np.uint8) * 255)
        if masks:
            write_png_atomic(root / e["vessels"], v1.astype(np.uint8) * 255)
            write_png_atomic(root / e["vessels_2nd"], v2.astype(np.uint8) * 255)
        entries.append(e)
    write_json_atomic(root / "manifest.json", {"size": size, "images": entries})


SPLITS = {"train": ["chase_db1/Image_01L", "chase_db1/Image_02R"], "val": ["chase_db1/Image_03L"],
          "test": ["chase_db1/Image_04R"]}
STAGE_PARAMS = {"steps": 6, "patch": 32, "batch": 4, "lr": 0.01, "width": 4, "depth": 3, "threshold": 0.5,
                "num_threads": 1}


def test_train_segmenter_stage_is_byte_identical_and_measures_itself(tmp_path, chase_dir):
    _prepared_dir(chase_dir, tmp_path / "prepared", ("Image_01L", "Image_02R", "Image_03L", "Image_04R"))
    meta = {"splits": SPLITS}
    for name in ("a", "b"):
        metrics = train_segmenter_stage(tmp_path / "prepared", meta, tmp_path / name, params=STAGE_PARAMS, seed=3)
    for f in ("model.safetensors", "model.json", "metrics.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    saved = json.loads((tmp_path / "a" / "model.json").read_text())
    assert saved["train_ids"] == SPLITS["train"] and saved["binarize"] == {"rule": "threshold", "value": 0.5}
    assert metrics["segmenter"] == "unet" and metrics["test_images"] == 1 and metrics["train_images"] == 2
    assert [r["id"] for r in metrics["per_image"]] == SPLITS["test"]  # measured on test images only
    assert 0.0 <= metrics["auc"]["mean"] <= 1.0 and 0.0 <= metrics["dice"]["mean"] <= 1.0
    assert 0.85 < metrics["frangi_auc"]["mean"] < 1.0
    assert 0.7 < metrics["observer2_dice"]["mean"] < 0.9  # the second observer against the first
    segmenter, _ = V.load_vessel_segmenter(tmp_path / "a")
    img, fov, _, _ = prepared(chase_dir, "Image_04R", 128)
    score, binary = segmenter(img, fov)
    assert segmenter.name == "unet" and np.array_equal(binary, (score > 0.5) & fov)


def test_train_segmenter_stage_without_masks_records_frangi(tmp_path, chase_dir):
    _prepared_dir(chase_dir, tmp_path / "prepared", ("Image_01L", "Image_02R", "Image_04R"), masks=False)
    metrics = train_segmenter_stage(tmp_path / "prepared", {"splits": SPLITS}, tmp_path / "seg", params=STAGE_PARAMS,
                                    seed=3)
    assert metrics["segmenter"] == "frangi" and "reason" in metrics
    assert sorted(p.name for p in (tmp_path / "seg").iterdir()) == ["metrics.json", "model.json", "model.safetensors"]
    segmenter, meta = V.load_vessel_segmenter(tmp_path / "seg")
    assert segmenter.name == "frangi" and meta["train_ids"] == []
    img, fov, _, _ = prepared(chase_dir, "Image_04R", 128)
    assert np.array_equal(segmenter(img, fov)[1], V.segment_frangi(img, fov)[1])
    assert V.load_vessel_segmenter(tmp_path / "absent")[0].name == "frangi"


def test_train_segmenter_stage_refuses_test_images_in_training(tmp_path, chase_dir):
    _prepared_dir(chase_dir, tmp_path / "prepared", ("Image_01L", "Image_04R"))
    bad = {"splits": {"train": ["chase_db1/Image_01L", "chase_db1/Image_04R"], "val": [],
                      "test": ["chase_db1/Image_04R"]}}
    with pytest.raises(AssertionError, match="also in the test split"):
        train_segmenter_stage(tmp_path / "prepared", bad, tmp_path / "seg", params=STAGE_PARAMS, seed=3)


def test_train_fraction_rule_marks_the_training_masks_share():
    masks = [np.zeros((10, 10), bool), np.zeros((10, 10), bool)]
    masks[0][:1] = True
    masks[1][:3] = True
    fovs = [np.ones((10, 10), bool)] * 2
    assert resolve_binarize_rule("train_fraction", masks, fovs) == {"rule": "top_fraction", "value": 0.2}
    with pytest.raises(InputError, match="segmenter.threshold"):
        resolve_binarize_rule(1.5, masks, fovs)


def test_main_writes_the_stage_outputs_and_logs_the_mean_scores(tmp_path, chase_dir, monkeypatch):
    """main(): params' ``segmenter`` section and ``seed``, the paths of medrestore.pipeline.paths,
    the same outputs as train_segmenter_stage, the mean scores logged to the stage's run."""
    from contextlib import contextmanager

    from medrestore.pipeline import train_segmenter as stage

    class Tracker:
        def __init__(self) -> None:
            self.metrics, self.tags, self.calls = {}, {}, []

        def log_metrics(self, metrics):
            self.metrics.update(metrics)

        def set_tags(self, tags):
            self.tags.update(tags)

        def call(self, what, fn, *args, **kwargs):  # the dataset inputs (medrestore.tracking.runs.log_datasets)
            self.calls.append((what, kwargs.get("context")))

    tracker = Tracker()

    @contextmanager
    def fake_run(name, section, all_params):
        assert name == "train_segmenter" and section == STAGE_PARAMS
        yield tracker

    _prepared_dir(chase_dir, tmp_path / "prepared", ("Image_01L", "Image_02R", "Image_03L", "Image_04R"))
    (tmp_path / "patches").mkdir()
    (tmp_path / "patches" / "patches.json").write_text(json.dumps({"splits": SPLITS}))
    monkeypatch.setattr(stage, "params", lambda: {"seed": 3, "segmenter": STAGE_PARAMS})
    monkeypatch.setattr(stage, "run", fake_run)
    monkeypatch.setattr(stage, "PREPARED", tmp_path / "prepared")
    monkeypatch.setattr(stage, "PATCHES", tmp_path / "patches")
    monkeypatch.setattr(stage, "SEGMENTER", tmp_path / "segmenter")
    stage.main([])
    assert tracker.calls == [("log_input", "train")] * 2  # prepared/ and patches/, the stage's inputs
    train_segmenter_stage(tmp_path / "prepared", {"splits": SPLITS}, tmp_path / "direct", params=STAGE_PARAMS, seed=3)
    for f in ("model.safetensors", "model.json", "metrics.json"):
        assert (tmp_path / "segmenter" / f).read_bytes() == (tmp_path / "direct" / f).read_bytes(), f
    metrics = json.loads((tmp_path / "segmenter" / "metrics.json").read_text())
    assert tracker.metrics == {
        f"segmenter.{k}": metrics[k]["mean"]
        for k in (
            "auc",
            "dice",
            "frangi_auc",
            "frangi_dice",
            "observer2_dice",
            "observer2_recall",
            "observer2_specificity",
        )
    }
    # the output folder (DVC's directory md5) and each of its three files
    assert {Path(k.removeprefix("out_md5:")).name for k in tracker.tags} == {"segmenter", "model.safetensors",
                                                                            "model.json", "metrics.json"}
    assert all(k.startswith("out_md5:") for k in tracker.tags)


def test_the_scoring_segmenter_is_independent_of_the_losss_segmenter(tmp_path, chase_dir, monkeypatch):
    """``train_segmenter scoring``: the same recipe on the second observer's masks with another seed,
    written to its own folder. Its weights differ from the loss's segmenter's, it learned other
    labels, and a vessel-aware loss reads the loss's folder, never this one."""
    from contextlib import contextmanager

    from safetensors.torch import load_file

    from medrestore.pipeline import paths
    from medrestore.pipeline import train as train_stage
    from medrestore.pipeline import train_segmenter as stage

    names = []

    @contextmanager
    def fake_run(name, section, all_params):
        names.append((name, section))
        yield type("Tracker", (), {"log_metrics": lambda self, m: None, "set_tags": lambda self, t: None,
                                   "call": lambda self, what, fn, *args, **kwargs: None})()

    _prepared_dir(chase_dir, tmp_path / "prepared", ("Image_01L", "Image_02R", "Image_03L", "Image_04R"))
    (tmp_path / "patches").mkdir()
    (tmp_path / "patches" / "patches.json").write_text(json.dumps({"splits": SPLITS}))
    monkeypatch.setattr(stage, "params",
                        lambda: {"seed": 3, "segmenter": STAGE_PARAMS,
                                 "scoring_segmenter": {"observer": 2, "seed_offset": 1}})
    monkeypatch.setattr(stage, "run", fake_run)
    monkeypatch.setattr(stage, "tag_outputs", lambda tracker, outs: None)
    monkeypatch.setattr(stage, "PREPARED", tmp_path / "prepared")
    monkeypatch.setattr(stage, "PATCHES", tmp_path / "patches")
    monkeypatch.setattr(stage, "SEGMENTER", tmp_path / "segmenter")
    monkeypatch.setattr(stage, "SCORING_SEGMENTER", tmp_path / "scoring_segmenter")
    stage.main([])
    stage.main(["scoring"])
    assert [n for n, _ in names] == ["train_segmenter", "train_scoring_segmenter"]
    assert names[0][1] == STAGE_PARAMS and names[1][1] == {**STAGE_PARAMS, "observer": 2, "seed": 4}
    loss_meta = json.loads((tmp_path / "segmenter" / "model.json").read_text())
    scoring_meta = json.loads((tmp_path / "scoring_segmenter" / "model.json").read_text())
    assert loss_meta["observer"] == 1 and scoring_meta["observer"] == 2
    a, b = (
        load_file(str(tmp_path / "segmenter" / "model.safetensors")),
        load_file(str(tmp_path / "scoring_segmenter" / "model.safetensors")),
    )
    assert a.keys() == b.keys() and any(not np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    # the scoring segmenter learned the second observer: the same recipe and seed on the first observer's masks gives
    # other weights
    train_segmenter_stage(tmp_path / "prepared", {"splits": SPLITS}, tmp_path / "obs1", params=STAGE_PARAMS, seed=4)
    c = load_file(str(tmp_path / "obs1" / "model.safetensors"))
    assert any(not np.array_equal(b[k].numpy(), c[k].numpy()) for k in b)
    # the pipeline's paths: the loss's segmenter and the scoring segmenter are two folders; training reads the first
    assert paths.SCORING_SEGMENTER != paths.SEGMENTER and train_stage.SEGMENTER == paths.SEGMENTER
    with pytest.raises(InputError, match="WHICH|scoring"):
        stage.main(["scoring_segmenter"])


def test_without_second_observer_masks_the_scoring_segmenter_keeps_the_first_with_its_own_seed(tmp_path, chase_dir,
                                                                                              capsys):
    _prepared_dir(chase_dir, tmp_path / "prepared", ("Image_01L", "Image_02R", "Image_04R"))
    manifest = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    for e in manifest["images"]:
        e["vessels_2nd"] = None
    (tmp_path / "prepared" / "manifest.json").write_text(json.dumps(manifest))
    splits = {"train": ["chase_db1/Image_01L", "chase_db1/Image_02R"], "val": [], "test": ["chase_db1/Image_04R"]}
    train_segmenter_stage(tmp_path / "prepared", {"splits": splits}, tmp_path / "out",
                          params={**STAGE_PARAMS, "observer": 2}, seed=4)
    meta = json.loads((tmp_path / "out" / "model.json").read_text())
    assert meta["observer"] == 1 and "second observer" in meta["observer_note"]
    assert "no training image has a second observer's mask" in capsys.readouterr().err
