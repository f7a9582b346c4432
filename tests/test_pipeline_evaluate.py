"""The evaluate stage (medrestore.pipeline.evaluate) on a small real task: CHASE_DB1 images at 128 px,
their manual masks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from medrestore.core.io import InputError, read_image, write_json_atomic, write_png_atomic
from medrestore.data.fov import prepare_arrays
from medrestore.data.sources import load_mask
from medrestore.degradations import corrupt, to_float, upsample_bicubic
from medrestore.evaluation.cost import count_parameters
from medrestore.evaluation.metrics import (
    COLUMNS,
    FULL_REFERENCE,
    LOWER_IS_BETTER,
    METRICS,
    NO_REFERENCE,
    PAIRED,
    VESSEL_COLUMNS,
)
from medrestore.models import build_model, save_model
from medrestore.pipeline.evaluate import evaluate_task

SIZE = 128
STEMS = ("Image_01L", "Image_02R", "Image_03L", "Image_04R")  # train, val, test, test


def _patches(chase_dir, root):
    """A patches folder as patchify writes it (splits by image id, clean test images with FOV/masks)."""
    meta = {"splits": {"train": [f"chase_db1/{STEMS[0]}"], "val": [f"chase_db1/{STEMS[1]}"], "test": []}, "test": []}
    for stem in STEMS[2:]:
        img, fov, vessels = prepare_arrays(read_image(chase_dir / f"{stem}.jpg"),
                                           load_mask(chase_dir / f"{stem}_1stHO.png"), size=SIZE)
        iid = f"chase_db1/{stem}"
        entry = {"id": iid, "source_id": iid, "dataset": "chase_db1", "subject": f"chase_db1/{stem[6:8]}",
                 "image": f"test/images/{stem}.png",
                 "fov": f"test/fov/{stem}.png", "vessels": f"test/vessels/{stem}.png"}
        write_png_atomic(root / entry["image"], img)
        write_png_atomic(root / entry["fov"], fov.astype(np.uint8) * 255)
        write_png_atomic(root / entry["vessels"], vessels.astype(np.uint8) * 255)
        meta["splits"]["test"].append(iid)
        meta["test"].append(entry)
    write_json_atomic(root / "patches.json", meta)
    return meta


def _corrupt(patches_dir, meta, root, spec, scale):
    cases = []
    for i, entry in enumerate(meta["test"]):
        degraded, params = corrupt(read_image(patches_dir / entry["image"]), spec, [3, i])
        rel = f"test/v/{entry['id'].replace('/', '__')}.png"
        write_png_atomic(root / rel, degraded)
        cases.append({"id": entry["id"], "variant": "v", "file": rel, "spec": spec, "params": params})
    write_json_atomic(root / "corruption.json", {"task": "t", "scale": scale, "test": cases})


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 threads on shared busy cores are slower than 1
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def denoise_task(one_torch_thread, chase_dir, assets_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("evaltask")
    meta = _patches(chase_dir, root / "patches")
    _corrupt(root / "patches", meta, root / "corrupt", {"kind": "gaussian", "sigma": 25}, 1)
    torch.manual_seed(0)
    save_model(build_model("dncnn", depth=3, features=8), root / "models" / "dncnn", name="dncnn",
               kwargs={"depth": 3, "features": 8})
    # the independent scoring segmenter: a small U-Net trained on the train image's second-observer mask
    from medrestore.training.segmenter import train_segmenter

    img, fov, v2 = prepare_arrays(read_image(chase_dir / f"{STEMS[0]}.jpg"),
                                  load_mask(chase_dir / f"{STEMS[0]}_2ndHO.png"), size=SIZE)
    train_segmenter([img], [v2], [fov], root / "scoring_segmenter", steps=8, patch_size=32, batch_size=2, width=4,
                    seed=5,
                    extra_meta={"train_ids": [f"chase_db1/{STEMS[0]}"]})
    kw = {"baselines": ["median"], "tile": 64, "overlap": 8, "seed": 1, "assets_dir": str(assets_dir),
          "scoring_segmenter_dir": root / "scoring_segmenter"}
    summary = evaluate_task("denoise-x", root / "patches", root / "corrupt", root / "models", root / "eval", **kw)
    evaluate_task("denoise-x", root / "patches", root / "corrupt", root / "models", root / "eval2", **kw)
    return root, summary


def test_every_metric_for_every_restored_image(denoise_task):
    root, _ = denoise_task
    table = pd.read_csv(root / "eval" / "per_image.csv")
    assert set(table["method"]) == {"degraded", "dncnn", "median", "clean"}
    restored = table[table["kind"] != "reference"]
    assert len(restored) == 3 * 2
    for col in FULL_REFERENCE + NO_REFERENCE + VESSEL_COLUMNS:
        assert np.isfinite(restored[col]).all(), col
    for col in ("manual_auc", "manual_dice", "ref_dice", "manual_thin_recall", "manual_invented_rate"):
        assert restored[col].between(0, 1).all(), col
    # The 3x3 median removes much of sigma-25 noise: higher PSNR inside the FOV than the noisy input.
    by = restored.groupby("method")[["psnr_fov", "ssim_fov"]].mean()
    assert by.loc["median", "psnr_fov"] > by.loc["degraded", "psnr_fov"] + 2
    assert by.loc["median", "ssim_fov"] > by.loc["degraded", "ssim_fov"]
    clean = table[table["kind"] == "reference"]
    assert clean["manual_auc"].between(0.8, 1).all() and clean["psnr"].isna().all()


def test_the_independent_segmenter_scores_its_own_columns(denoise_task):
    """indep_ columns: the scoring segmenter (not the pipeline's) against the same manual mask."""
    from medrestore.vessels import load_vessel_segmenter, vessel_scores

    root, summary = denoise_task
    table = pd.read_csv(root / "eval" / "per_image.csv")
    assert summary["scoring_segmenter"]["segmenter"] == "unet" and summary["segmenter"]["segmenter"] == "frangi"
    assert not np.allclose(table["indep_auc"], table["manual_auc"])
    scoring_segmenter, _ = load_vessel_segmenter(root / "scoring_segmenter")
    row = table[(table["method"] == "degraded")].iloc[0]
    entry = next(
        e for e in json.loads((root / "patches" / "patches.json").read_text())["test"] if e["id"] == row["image_id"]
    )
    degraded = read_image(root / "corrupt" / f"test/v/{row['image_id'].replace('/', '__')}.png")
    fov = read_image(root / "patches" / entry["fov"], "L") > 127
    manual = read_image(root / "patches" / entry["vessels"], "L") > 127
    score, binary = scoring_segmenter(degraded, fov)
    expected = vessel_scores(score, binary, manual, fov)
    assert row["indep_auc"] == pytest.approx(expected["auc"], abs=1e-6)
    assert row["indep_invented_rate"] == pytest.approx(expected["invented_rate"], abs=1e-6)


def test_summary_holds_cis_paired_tests_and_deterministic_cost(denoise_task):
    root, summary = denoise_task
    assert summary["segmenter"]["segmenter"] == "frangi"  # no trained segmenter given
    psnr = summary["methods"]["median"]["v"]["psnr_fov"]
    assert psnr["ci95"][0] <= psnr["mean"] <= psnr["ci95"][1]
    assert (psnr["n_images"], psnr["n_subjects"]) == (2, 2) and summary["methods"]["median"]["v"]["n_subjects"] == 2
    test = summary["paired_tests"]["v"]
    assert test["baseline"] == "median"
    t = test["models"]["dncnn"]["psnr_fov"]
    assert t["n"] == 2 and t["min_p"] == 0.5 and 0 < t["wilcoxon_p"] <= 1 and (t["n_images"], t["n_subjects"]) == (2, 2)
    raw = pd.read_csv(root / "eval" / "per_image.csv")
    assert dict(zip(raw["image_id"], raw["subject"])) == {"chase_db1/Image_03L": "chase_db1/03",
                                                          "chase_db1/Image_04R": "chase_db1/04"}
    table = raw.set_index(["method", "image_id"])
    diff = table.loc["dncnn", "psnr_fov"] - table.loc["median", "psnr_fov"]
    assert t["mean_diff"] == pytest.approx(diff.mean(), abs=1e-4)
    net = build_model("dncnn", depth=3, features=8)
    c = summary["cost"]["methods"]["dncnn"]
    assert c["parameters"] == count_parameters(net)
    # Every conv of this DnCNN is 3x3: 2 * 9 * cin * cout FLOPs per pixel (a multiply-add counts 2).
    assert c["flops_per_mpix"] == pytest.approx(2 * 9 * (3 * 8 + 8 * 8 + 8 * 3) * 1e6, rel=1e-6)
    timing = json.loads((root / "eval" / "cost.json").read_text())
    assert timing["methods"]["dncnn"]["seconds_per_mpix"] > 0 and timing["methods"]["median"]["seconds_per_mpix"] > 0
    for name in ("per_image.csv", "summary.json"):
        assert (root / "eval" / name).read_bytes() == (root / "eval2" / name).read_bytes(), name


def test_every_metric_the_evaluation_writes_is_in_the_registry(denoise_task):
    root, summary = denoise_task
    table = pd.read_csv(root / "eval" / "per_image.csv")
    assert list(table.columns) == ["task", "method", "kind", "image_id", "subject", "variant", "sigma", "scale",
                                   *COLUMNS]
    assert all(c in METRICS for c in COLUMNS)
    for stats in (s for variants in summary["methods"].values() for s in variants.values()):
        assert all(k in METRICS for k in stats if k not in ("kind", "n", "n_images", "n_subjects"))
    tests = summary["paired_tests"]["v"]["models"]["dncnn"]
    assert list(tests) == [m for m in PAIRED if m in tests] and "psnr_fov" in tests and "manual_invented_rate" in tests
    for name, t in tests.items():
        assert t["higher_is_better"] == (name not in LOWER_IS_BETTER), name


def test_main_runs_the_stage_on_the_pipeline_paths(denoise_task, assets_dir, tmp_path, monkeypatch):
    import shutil

    import yaml

    from medrestore.pipeline import evaluate

    root, _ = denoise_task
    for src, dest in (("patches", "artifacts/patches"), ("corrupt", "artifacts/corrupt/denoise-x"),
                      ("models", "artifacts/models/denoise-x"), ("scoring_segmenter", "artifacts/segmenter_scoring")):
        shutil.copytree(root / src, tmp_path / dest)
    params = {"seed": 1,
              "evaluate": {"baselines": {"denoise": ["median"]}, "tile": 64, "overlap": 8, "assets": str(assets_dir)}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(evaluate, "params", lambda: params)  # the stage's params, as params.yaml gives them
    monkeypatch.setattr(evaluate, "run", lambda name, p, all_p: __import__("contextlib").nullcontext(None))
    evaluate.main(["denoise-x"])
    for name in ("per_image.csv", "summary.json"):  # what the stage writes is what evaluate_task wrote above
        assert (tmp_path / "artifacts/eval/denoise-x" / name).read_bytes() == (root / "eval" / name).read_bytes(), name
    with pytest.raises(SystemExit, match="TASK"):
        evaluate.main([])


def test_super_resolution_floor_is_the_bicubic_upsampled_input(chase_dir, assets_dir, tmp_path):
    meta = _patches(chase_dir, tmp_path / "patches")
    _corrupt(tmp_path / "patches", meta, tmp_path / "corrupt", {"kind": "downscale", "scale": 2}, 2)
    torch.manual_seed(0)
    kwargs = {"scale": 2, "n_blocks": 1, "features": 8}
    save_model(build_model("srresnet", **kwargs), tmp_path / "models" / "srresnet", name="srresnet", kwargs=kwargs)
    summary = evaluate_task("sr-x2", tmp_path / "patches", tmp_path / "corrupt", tmp_path / "models", tmp_path / "eval",
                              baselines=["bicubic", "median"], tile=32, overlap=12, seed=0, assets_dir=str(assets_dir))
    assert summary["scale"] == 2 and "bicubic" in summary["floor"]
    for entry in meta["test"]:
        name = entry["id"].replace("/", "__")
        low = read_image(tmp_path / "corrupt" / "test" / "v" / f"{name}.png")
        floor = read_image(tmp_path / "eval" / "restored" / "degraded" / "v" / f"{name}.png")
        assert floor.shape == (SIZE, SIZE, 3) and low.shape == (SIZE // 2, SIZE // 2, 3)
        expected = np.clip(np.rint(upsample_bicubic(to_float(low), 2) * 255), 0, 255)
        assert np.abs(floor.astype(int) - expected).max() == 0
        bic = read_image(tmp_path / "eval" / "restored" / "bicubic" / "v" / f"{name}.png")
        assert np.array_equal(bic, floor)  # the classical SR comparator is the floor itself
        for method in ("srresnet", "median"):
            assert read_image(tmp_path / "eval" / "restored" / method / "v" / f"{name}.png").shape == (SIZE, SIZE, 3)
    table = pd.read_csv(tmp_path / "eval" / "per_image.csv")
    assert (table["scale"] == 2).all()
    # Upsampling loses the thin vessels: the floor's PSNR stays below what the clean image would give.
    assert table.loc[table["method"] == "degraded", "psnr_fov"].between(20, 45).all()


def test_model_with_the_wrong_scale_is_refused(chase_dir, tmp_path):
    meta = _patches(chase_dir, tmp_path / "patches")
    _corrupt(tmp_path / "patches", meta, tmp_path / "corrupt", {"kind": "downscale", "scale": 2}, 2)
    kwargs = {"scale": 4, "n_blocks": 1, "features": 8}
    save_model(build_model("srresnet", **kwargs), tmp_path / "models" / "srresnet", name="srresnet", kwargs=kwargs)
    with pytest.raises(InputError, match="x4 but task sr-x2 is x2"):
        evaluate_task("sr-x2", tmp_path / "patches", tmp_path / "corrupt", tmp_path / "models", tmp_path / "eval",
                        baselines=[], tile=48, overlap=12, seed=0)


def test_each_trained_model_gets_its_test_scores_on_its_training_run_and_registered_version(
    denoise_task, tmp_path, monkeypatch
):
    """After the evaluation, ``metrics.test_v_psnr_fov > x`` finds the run that trained the scored weights (and
    its logged model); weights without a training run in the store get a child run of the evaluation; the
    registered version carries the same numbers as tags and description."""
    import shutil

    import mlflow
    import yaml
    from mlflow import MlflowClient

    from medrestore.evaluation.metrics import headline_scores
    from medrestore.pipeline.evaluate import log_test_scores
    from medrestore.serving.mlflow_model import log_restoration_model
    from medrestore.tracking.lineage import register_best_models
    from medrestore.tracking.runs import file_md5, log_datasets, stage_run, tag_outputs

    root, summary = denoise_task
    models = tmp_path / "artifacts" / "models" / "denoise-x"
    shutil.copytree(root / "models" / "dncnn", models / "dncnn")
    shutil.copytree(root / "models" / "dncnn", models / "dncnn-copy")  # the same weights under a name no run wrote
    shutil.copytree(root / "corrupt", tmp_path / "artifacts" / "corrupt" / "denoise-x")
    summary = {**summary, "methods": {**summary["methods"], "dncnn-copy": summary["methods"]["dncnn"]}}
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    weights = "artifacts/models/denoise-x/dncnn/model.safetensors"
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"train@denoise-x-dncnn": {
        "cmd": "python stages/train.py denoise-x-dncnn",
        "outs": [{"path": weights, "md5": file_md5(tmp_path / weights)}]}}}))
    with stage_run("train@denoise-x-dncnn", {"lr": 0.001}, required=True) as train:  # as the training stage logs it
        tag_outputs(train, [models / "dncnn"])
        uri = train.call("log_model", log_restoration_model, models / "dncnn",
                         read_image(root / "corrupt" / "test/v/chase_db1__Image_03L.png")[:64, :64])
        train.set_tags({"model_uri": uri})
    with stage_run("evaluate@denoise-x", {}, required=True) as ev:
        datasets = log_datasets(ev, [tmp_path / "artifacts" / "corrupt" / "denoise-x"], "test")
        (name, digest), = datasets.items()
        done = log_test_scores(ev, "denoise-x", summary, models, (name, digest))
    assert not ev.failures and set(done) == {"dncnn", "dncnn-copy"}
    assert done["dncnn"] == train.run_id and done["dncnn-copy"] != train.run_id

    psnr = summary["methods"]["dncnn"]["v"]["psnr_fov"]["mean"]
    scores = headline_scores(summary, "dncnn")
    assert scores["test_v_psnr_fov"] == psnr and {"test_v_ssim", "test_v_thin_kept", "test_v_niqe"} <= set(scores)
    found = mlflow.search_runs(filter_string=f"metrics.test_v_psnr_fov > {psnr - 0.01}", search_all_experiments=True,
                               output_format="list")
    assert {r.info.run_name for r in found} == {"train@denoise-x-dncnn", "evaluate@denoise-x dncnn-copy"}
    trained = next(r for r in found if r.info.run_id == train.run_id)
    assert trained.data.params["lr"] == "0.001" and trained.data.tags["test_eval_run_id"] == ev.run_id
    assert {k: v for k, v in trained.data.metrics.items() if k.startswith("test_")} == pytest.approx(scores)
    assert not mlflow.search_runs(filter_string=f"metrics.test_v_psnr_fov > {psnr + 0.01}", search_all_experiments=True,
                                  output_format="list")
    child = next(r for r in found if r.info.run_id == done["dncnn-copy"])
    assert child.data.tags["mlflow.parentRunId"] == ev.run_id and child.data.tags["model"] == "dncnn-copy"
    assert child.info.status == "FINISHED"
    # the logged model holds them too, linked to the test images' dataset
    (logged,) = mlflow.search_logged_models(filter_string=f"metrics.test_v_psnr_fov > {psnr - 0.01}",
                                            output_format="list")
    assert logged.model_id == uri.split("/")[-1]
    assert {m.key: (m.dataset_name, m.dataset_digest) for m in logged.metrics}["test_v_psnr_fov"] == (name, digest)

    with stage_run("report", {}) as report:
        best = {"denoise-x": {"model": "dncnn", "metric": "psnr_fov", "value": psnr}}
        registered = register_best_models(best, tmp_path / "artifacts" / "models", root=tmp_path, tracker=report,
                                          tasks=["denoise-x"], eval_root=tmp_path / "eval")
    assert not report.failures, report.failures
    name, version = registered["denoise-x"].rsplit("/", 1)
    # no summary.json yet
    assert not any(k.startswith("test_") for k in MlflowClient().get_model_version(name, version).tags)
    (tmp_path / "eval" / "denoise-x").mkdir(parents=True)
    (tmp_path / "eval" / "denoise-x" / "summary.json").write_text(json.dumps(summary))
    with stage_run("report", {}) as report:
        registered = register_best_models(best, tmp_path / "artifacts" / "models", root=tmp_path, tracker=report,
                                          tasks=["denoise-x"], eval_root=tmp_path / "eval")
    assert not report.failures, report.failures
    assert registered["denoise-x"] == f"{name}/{version}"  # the same weights: the version is reused, its tags completed
    mv = MlflowClient().get_model_version(name, version)
    assert float(mv.tags["test_v_psnr_fov"]) == pytest.approx(psnr,
                                                              abs=1e-3) and mv.tags["train_run_id"] == train.run_id
    assert "- v: psnr " in mv.description and f"psnr_fov {psnr:.4g}" in mv.description
