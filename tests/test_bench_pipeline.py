"""The benchmark sections that run the pipeline itself (benchmarks/bench_pipeline.py)."""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

from benchmarks import bench_pipeline  # noqa: E402


def test_patchify_section_measures_both_stages_at_1x_and_4x(chase_dir):
    res = bench_pipeline.bench_patchify(REPO, size=128, stride=32, mirror=str(chase_dir.parent))
    assert res["x4"]["images"] == 4 * res["x1"]["images"] and res["x4"]["patches"] == 4 * res["x1"]["patches"]
    assert res["corrupt_x4"]["patches"] == res["x4"]["patches"] > 0
    for key in ("x1", "x4", "corrupt_x1", "corrupt_x4"):
        assert res[key]["peak_rss_mib"] > res["imports_only"]["baseline_rss_mib"] * 0.5 and res[key]["seconds"] > 0


def _lock(path: Path, md5s: dict[str, str]) -> Path:
    stages = {"evaluate@t": {"outs": [{"path": "artifacts/eval/t/summary.json", "md5": md5s["summary"]},
                                      {"path": "artifacts/eval/t/cost.json", "md5": md5s["cost"]}]},
              "train@r": {"outs": [{"path": "artifacts/models/t/m", "md5": md5s["model"]}]},
              "other": {"outs": [{"path": "x", "md5": md5s["other"]}]}}
    path.write_text(yaml.safe_dump({"schema": "2.0", "stages": stages}))
    return path


def test_a_fresh_run_is_compared_with_the_lock_output_by_output_timings_apart(tmp_path):
    ours = _lock(tmp_path / "ours.lock", {"summary": "a", "cost": "c1", "model": "m", "other": "o"})
    theirs = _lock(tmp_path / "theirs.lock", {"summary": "a", "cost": "c2", "model": "m2", "other": "o2"})
    res = bench_pipeline.compare_locks(ours, theirs, {"evaluate@t", "train@r", "absent"})
    assert res["outputs_compared"] == 2 and res["outputs_identical"] == 1  # "other" did not run: not compared
    assert res["outputs_differing"] == ["train@r:artifacts/models/t/m"]
    assert res["timing_outputs"] == ["evaluate@t:artifacts/eval/t/cost.json"]  # machine-dependent seconds


def test_stage_seconds_run_from_one_running_line_to_the_next():
    stages = bench_pipeline.stage_seconds([("download", 0.0), ("prepare", 2.5), ("train@a", 3.0)], 10.0)
    assert stages == {"download": 2.5, "prepare": 0.5, "train@a": 7.0}
    assert bench_pipeline._by_kind({"train@a": 7.0, "train@b": 1.0, "prepare": 0.5}) == {"train": 8.0, "prepare": 0.5}
