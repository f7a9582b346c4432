"""The evaluation's measures and statistics (medrestore.evaluation): test images kept out of training,
the paired tests, the baselines per task. The stage on a real task: tests/test_pipeline_evaluate.py."""

from __future__ import annotations

import numpy as np
import pytest

from medrestore import evaluation as E


def test_test_images_never_in_training_nor_in_the_segmenter_training_set():
    meta = {"splits": {"train": ["a", "b"], "val": ["c"], "test": ["d"]}, "test": [{"id": "d", "source_id": "d"}]}
    E.assert_test_unseen(meta, ["a", "b"])
    with pytest.raises(AssertionError, match="segmenter"):
        E.assert_test_unseen(meta, ["a", "d"])
    with pytest.raises(AssertionError, match="also in val"):
        E.assert_test_unseen({"splits": {"train": ["a"], "val": ["d"], "test": ["d"]}, "test": []})


def test_paired_test_on_a_consistent_gain_reaches_the_exact_wilcoxon_floor():
    base = np.array([30.1, 28.7, 31.2, 29.9, 30.5, 27.8, 29.0])
    t = E.paired_test(base + np.linspace(0.5, 1.1, 7), base, seed=0)
    # All 7 differences positive: the exact two-sided p is 2 / 2**7.
    assert t["n"] == 7 and t["wilcoxon_p"] == pytest.approx(2 / 128) and t["min_p"] == pytest.approx(2 / 128)
    assert 0.5 <= t["ci95"][0] < t["mean_diff"] < t["ci95"][1] <= 1.1 and t["model_better"] == 7
    same = E.paired_test(base, base, seed=0)
    assert same["wilcoxon_p"] == 1.0 and same["mean_diff"] == 0.0


def test_baselines_per_task_and_chain_sigma():
    spec = {"denoise": ["median", "nlmeans"], "sr": ["bicubic"], "denoise-sr": ["nlmeans"], "enhance": ["clahe"]}
    assert E.baselines_for("denoise-g25", spec) == ["median", "nlmeans"]
    assert E.baselines_for("denoise-sr", spec) == ["nlmeans"]
    assert E.baselines_for("sr-x4", spec) == ["bicubic"]
    assert E.baselines_for("other", spec) == []
    assert E.baselines_for("anything", ["median"]) == ["median"]
    assert E.case_sigma({"steps": [{"scale": 4}, {"sigma": 25.0}]}) == 25.0
    with pytest.raises(E.InputError, match="unknown baseline"):
        E.baseline_function("nope")


def test_per_image_table_has_every_registry_column_and_the_summary_means_and_intervals():
    from medrestore.metrics import COLUMNS

    rows = [{"task": "t", "method": m, "kind": k, "image_id": f"i{i}", "variant": "v", "sigma": 25.0, "scale": 1, "psnr_fov": 30.0 + i + d}
            for m, k, d in (("b", "baseline", 0.0), ("a", "model", 1.0), ("c", "baseline", -1.0)) for i in range(4)]
    table = E.per_image_table(rows)
    assert list(table.columns) == ["task", "method", "kind", "image_id", "subject", "variant", "sigma", "scale", *COLUMNS]
    assert table["ssim"].isna().all() and (table["subject"] == table["image_id"]).all()  # no subjects: each image its own
    stats = E.summarise(table, seed=0)
    assert list(stats) == ["a", "b", "c"] and stats["a"]["v"]["kind"] == "model" and stats["a"]["v"]["n"] == 4
    assert stats["a"]["v"]["n_images"] == 4 and stats["a"]["v"]["n_subjects"] == 4
    s = stats["a"]["v"]["psnr_fov"]
    assert s["n_images"] == 4 and s["n_subjects"] == 4
    assert s["mean"] == 32.5 and 31.0 <= s["ci95"][0] <= 32.5 <= s["ci95"][1] <= 34.0 and "ssim" not in stats["a"]["v"]
    paired = E.paired_tests(table, seed=0)["v"]
    assert paired["baseline"] == "b" and paired["chosen_by"] == "highest mean psnr_fov"  # the best baseline, as the report's
    assert paired["models"]["a"]["psnr_fov"]["mean_diff"] == 1.0 and paired["models"]["a"]["psnr_fov"]["higher_is_better"]
    assert E.rounded_cost({"z": {"parameters": 3, "flops_per_mpix": 1.26}, "a": {"parameters": 0}}) == {
        "a": {"parameters": 0}, "z": {"parameters": 3, "flops_per_mpix": 1.3}}
    assert E.median_after_warmup([9.0, 1.0, 2.0, 3.0]) == 2.0 and E.median_after_warmup([5.0]) == 5.0


def test_bootstrap_intervals_are_scipys_bca_with_a_percentile_fallback():
    """BCa (scipy.stats.bootstrap) on four skewed per-image values reaches further towards the long
    tail than the percentile interval of the same resamples; equal values give the point; a sample
    where BCa is undefined falls back to the percentile interval instead of NaN."""
    from scipy import stats

    from medrestore.evaluation import bootstrap_ci

    skewed = np.array([0.10, 0.12, 0.09, 0.30])  # e.g. thin-vessel recall on four test images
    lo, hi = bootstrap_ci(skewed, seed=1)
    pct = stats.bootstrap((skewed,), np.mean, n_resamples=2000, method="percentile", rng=np.random.default_rng(1)).confidence_interval
    bca = stats.bootstrap((skewed,), np.mean, n_resamples=2000, method="BCa", rng=np.random.default_rng(1)).confidence_interval
    assert (lo, hi) == (bca.low, bca.high) and hi > pct.high
    assert bootstrap_ci(skewed, seed=1) == (lo, hi)  # seeded: the same interval every time
    assert bootstrap_ci(np.array([0.5, 0.5, 0.5]), seed=1) == (0.5, 0.5)
    two = bootstrap_ci(np.array([1.0, 2.0]), seed=1)  # BCa's acceleration is undefined for two values
    assert np.isfinite(two).all() and 1.0 <= two[0] <= two[1] <= 2.0
    assert np.isnan(bootstrap_ci(np.array([np.nan]), seed=1)).all()
