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


def test_training_section_measures_engine_and_bare_loop(tmp_path):
    res = bench.bench_training(["cdae"], steps=2, batch=4, patch=32)
    r = res["models"]["cdae"]
    assert set(r["patches_per_second"]) == {"ours", "bare"}
    assert r["wall_seconds"]["ours"]["4"] > 0 and r["wall_seconds"]["bare"]["2"] > 0


def test_main_writes_json_and_markdown(tmp_path, assets_dir):
    assert bench.main(["--quick", "--only", "baselines", "--out", str(tmp_path), "--assets", str(assets_dir)]) == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["baselines"]["seconds_per_mpix"]["median"] > 0
    assert "Classical baselines" in (tmp_path / "bench.md").read_text()


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
