"""`make bench` sections run for real at a tiny size and report sane numbers (no timing asserts)."""

import json

import pytest

from medrestore import bench


def test_inference_section_compares_tiled_untiled_and_optimisations():
    res = bench.bench_inference(["dncnn"], size=96, tile=48, repeats=1)
    r = res["models"]["dncnn"]
    assert r["bn_pairs_folded"] == 15  # DnCNN-17: 15 conv + BN pairs
    for key in ("untiled", "tiled", "bn_folded", "bn_folded_channels_last"):
        assert r[key] > 0
    assert r["tiling_overhead"] > -0.9


def test_super_resolution_networks_are_given_the_reduced_image():
    r = bench.bench_inference(["srresnet"], size=64, tile=32, repeats=1)["models"]["srresnet"]
    assert r["input_size"] == 16 and r["untiled"] > 0 and r["tiled"] > 0


def test_inference_section_can_time_torch_compile_after_compiling():
    res = bench.bench_inference(["cdae"], size=64, tile=32, repeats=1, compile=True)
    r = res["models"]["cdae"]
    assert r["compiled"] > 0 and r["compile_seconds"] > 0 and r["compiled_vs_bn_folded_channels_last"] > 0
    assert "torch.compile" in bench.markdown({"machine": {}, "mode": "test", "inference": res})


def test_patchify_section_measures_both_stages_at_1x_and_4x(chase_dir):
    res = bench.bench_patchify(bench.Path(__file__).resolve().parents[1], size=128, stride=32, mirror=str(chase_dir.parent))
    assert res["x4"]["images"] == 4 * res["x1"]["images"] and res["x4"]["patches"] == 4 * res["x1"]["patches"]
    assert res["corrupt_x4"]["patches"] == res["x4"]["patches"] > 0
    for key in ("x1", "x4", "corrupt_x1", "corrupt_x4"):
        assert res[key]["peak_rss_mib"] > res["imports_only"]["baseline_rss_mib"] * 0.5 and res[key]["seconds"] > 0


def test_training_section_measures_engine_and_bare_loop(tmp_path):
    res = bench.bench_training(["cdae"], steps=2, batch=4, patch=32)
    r = res["models"]["cdae"]
    assert set(r["patches_per_second"]) == {"ours", "bare"}
    assert r["wall_seconds"]["ours"]["4"] > 0 and r["wall_seconds"]["bare"]["2"] > 0


def test_repro_section_reruns_stages_from_nothing_in_a_clone_and_matches_the_lock(chase_dir):
    root = bench.Path(__file__).resolve().parents[1]
    res = bench.bench_repro(root, chase_dir.parents[1], targets=["prepare"])
    assert list(res["stages"]) == ["download", "prepare"] and res["by_kind"]["prepare"] > 0, res
    assert res["seconds"] >= sum(res["stages"].values()) - 0.5
    # the committed dvc.lock records these outputs; rerun from nothing they come out byte-identical
    assert res["outputs_compared"] >= 2 and res["outputs_identical"] == res["outputs_compared"], res["outputs_differing"]
    md = bench.markdown({"machine": {}, "mode": "test", "repro": res})
    assert f"{res['outputs_identical']} of {res['outputs_compared']}" in md


def test_lock_comparison_names_changed_outputs_and_leaves_out_timings(tmp_path):
    import yaml

    lock = yaml.safe_load((bench.Path(__file__).resolve().parents[1] / "dvc.lock").read_text())
    ours = tmp_path / "ours.lock"
    ours.write_text(yaml.safe_dump(lock))
    stage = next(k for k in lock["stages"] if k.startswith("evaluate@"))
    out = next(o for o in lock["stages"][stage]["outs"] if not o["path"].endswith("cost.json"))
    out["md5"] = "0" * 32
    for o in lock["stages"][stage]["outs"]:
        if o["path"].endswith("cost.json"):
            o["md5"] = "1" * 32  # timings differ on every run
    theirs = tmp_path / "theirs.lock"
    theirs.write_text(yaml.safe_dump(lock))
    res = bench.compare_locks(ours, theirs, {stage, "prepare"})
    assert res["outputs_differing"] == [f"{stage}:{out['path']}"]
    assert res["outputs_identical"] == res["outputs_compared"] - 1 and res["timing_outputs"] == [f"{stage}:{o['path']}" for o in lock["stages"][stage]["outs"] if o["path"].endswith("cost.json")]
    assert bench.stage_seconds([("a", 0.0), ("b", 2.5)], 4.0) == {"a": 2.5, "b": 1.5}


def test_main_writes_json_and_markdown(tmp_path, assets_dir):
    assert bench.main(["--quick", "--only", "baselines", "--out", str(tmp_path), "--assets", str(assets_dir)]) == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["baselines"]["seconds_per_mpix"]["median"] > 0
    assert "Classical baselines" in (tmp_path / "bench.md").read_text()
    # the report's performance section shows the same figures
    from medrestore.report import performance_section

    md, page = performance_section(data, "bench.json")
    assert "## Performance" in md and any(line.startswith("| median | ") for line in md)
    assert "<h2 id='performance'>Performance</h2>" in page and "<td>median</td>" in page


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
