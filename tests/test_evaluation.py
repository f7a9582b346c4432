"""The evaluation's measures and statistics (medrestore.evaluation.scoring): test images kept out of training,
the paired tests, the baselines per task. The stage on a real task: tests/test_pipeline_evaluate.py."""

from __future__ import annotations

import numpy as np
import pytest

from medrestore.evaluation import scoring as E


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
    from medrestore.evaluation.metrics import COLUMNS

    rows = [{"task": "t", "method": m, "kind": k, "image_id": f"i{i}", "variant": "v", "sigma": 25.0, "scale": 1,
             "psnr_fov": 30.0 + i + d}
            for m, k, d in (("b", "baseline", 0.0), ("a", "model", 1.0), ("c", "baseline", -1.0)) for i in range(4)]
    table = E.per_image_table(rows)
    assert list(table.columns) == ["task", "method", "kind", "image_id", "subject", "variant", "sigma", "scale",
                                   *COLUMNS]
    # no subjects: each image its own
    assert table["ssim"].isna().all() and (table["subject"] == table["image_id"]).all()
    stats = E.summarise(table, seed=0)
    assert list(stats) == ["a", "b", "c"] and stats["a"]["v"]["kind"] == "model" and stats["a"]["v"]["n"] == 4
    assert stats["a"]["v"]["n_images"] == 4 and stats["a"]["v"]["n_subjects"] == 4
    s = stats["a"]["v"]["psnr_fov"]
    assert s["n_images"] == 4 and s["n_subjects"] == 4
    assert s["mean"] == 32.5 and 31.0 <= s["ci95"][0] <= 32.5 <= s["ci95"][1] <= 34.0 and "ssim" not in stats["a"]["v"]
    paired = E.paired_tests(table, seed=0)["v"]
    # the best baseline, as the report's
    assert paired["baseline"] == "b" and paired["chosen_by"] == "highest mean psnr_fov"
    assert (
        paired["models"]["a"]["psnr_fov"]["mean_diff"] == 1.0 and paired["models"]["a"]["psnr_fov"]["higher_is_better"]
    )
    assert E.rounded_cost({"z": {"parameters": 3, "flops_per_mpix": 1.26}, "a": {"parameters": 0}}) == {
        "a": {"parameters": 0}, "z": {"parameters": 3, "flops_per_mpix": 1.3}}
    assert E.median_after_warmup([9.0, 1.0, 2.0, 3.0]) == 2.0 and E.median_after_warmup([5.0]) == 5.0


def test_bootstrap_intervals_are_scipys_bca_with_a_percentile_fallback():
    """BCa (scipy.stats.bootstrap) on four skewed per-image values reaches further towards the long
    tail than the percentile interval of the same resamples; equal values give the point; a sample
    where BCa is undefined falls back to the percentile interval instead of NaN."""
    from scipy import stats

    from medrestore.evaluation.scoring import bootstrap_ci

    skewed = np.array([0.10, 0.12, 0.09, 0.30])  # e.g. thin-vessel recall on four test images
    lo, hi = bootstrap_ci(skewed, seed=1)
    pct = stats.bootstrap((skewed,), np.mean, n_resamples=2000, method="percentile",
                          rng=np.random.default_rng(1)).confidence_interval
    bca = stats.bootstrap((skewed,), np.mean, n_resamples=2000, method="BCa",
                          rng=np.random.default_rng(1)).confidence_interval
    assert (lo, hi) == (bca.low, bca.high) and hi > pct.high
    assert bootstrap_ci(skewed, seed=1) == (lo, hi)  # seeded: the same interval every time
    assert bootstrap_ci(np.array([0.5, 0.5, 0.5]), seed=1) == (0.5, 0.5)
    two = bootstrap_ci(np.array([1.0, 2.0]), seed=1)  # BCa's acceleration is undefined for two values
    assert np.isfinite(two).all() and 1.0 <= two[0] <= two[1] <= 2.0
    assert np.isnan(bootstrap_ci(np.array([np.nan]), seed=1)).all()


# ----------------------------------------------------------------------------- statistics by subject
def _width(ci: tuple[float, float] | list[float]) -> float:
    return float(ci[1] - ci[0])


def test_an_interval_over_subjects_is_no_narrower_than_one_over_their_correlated_eyes():
    """Both eyes of one child score almost alike while the children differ: resampling the images
    takes the two eyes for two independent samples and gives a too-narrow interval; the interval over
    subjects does not."""
    rng = np.random.default_rng(3)
    child = np.array([24.1, 26.8, 25.2, 29.5, 27.3, 23.0])  # one level per child
    values = np.repeat(child, 2) + rng.normal(0.0, 0.02, 12)  # left and right eye of each child
    subjects = np.repeat([f"chase_db1/{k:02d}" for k in range(1, 7)], 2)
    by_subject = E.bootstrap_ci(values, seed=0, subjects=subjects)
    by_image = E.bootstrap_ci(values, seed=0)
    assert _width(by_subject) >= _width(by_image) * 1.2
    ci = E.interval(values, seed=0, subjects=subjects)
    assert ci["n_images"] == 12 and ci["n_subjects"] == 6 and ci["ci95"] == [round(v, 6) for v in by_subject]
    assert ci["mean"] == pytest.approx(values.mean(), abs=1e-6)  # two images per subject: the mean of the images


def test_a_second_identical_eye_per_subject_changes_nothing_over_subjects():
    one_eye = np.array([0.41, 0.52, 0.38, 0.61, 0.47, 0.55, 0.35])
    names = [f"s{k}" for k in range(7)]
    single = E.interval(one_eye, seed=5, subjects=names)
    double = E.interval(np.repeat(one_eye, 2), seed=5, subjects=np.repeat(names, 2))
    assert double["ci95"] == single["ci95"] and double["mean"] == single["mean"]
    assert (double["n_images"], double["n_subjects"], single["n_images"], single["n_subjects"]) == (14, 7, 7, 7)
    # resampling the duplicated images instead claims a narrower interval from the same seven people
    assert _width(E.bootstrap_ci(np.repeat(one_eye, 2), seed=5)) < _width(single["ci95"])
    # a subject with no finite value drops out of both counts; one NaN eye leaves its subject in
    gap = np.repeat(one_eye, 2)
    gap[0], gap[2], gap[3] = np.nan, np.nan, np.nan
    left = E.interval(gap, seed=5, subjects=np.repeat(names, 2))
    assert left["n_images"] == 11 and left["n_subjects"] == 6


def test_a_paired_test_over_subjects_counts_subjects_and_its_smallest_p():
    base = np.array([30.1, 30.3, 28.7, 28.6, 31.2, 31.0, 29.9, 30.2])  # four children, two eyes each
    subjects = np.repeat(["chase_db1/11", "chase_db1/12", "chase_db1/13", "chase_db1/14"], 2)
    t = E.paired_test(base + np.array([0.6, 0.8, 0.5, 0.7, 0.9, 1.1, 0.4, 0.6]), base, seed=0, subjects=subjects)
    assert (t["n"], t["n_images"], t["n_subjects"]) == (4, 8, 4)
    # four positive subject differences: the exact two-sided Wilcoxon p is its floor 2 / 2**4, not 2 / 2**8
    assert t["min_p"] == pytest.approx(2 / 16) and t["wilcoxon_p"] == pytest.approx(2 / 16)
    assert t["model_better"] == 4 and t["baseline_better"] == 0 and t["mean_diff"] == pytest.approx(0.7)
    assert 0.5 <= t["ci95"][0] <= 0.7 <= t["ci95"][1] <= 1.0
    images = E.paired_test(base + np.array([0.6, 0.8, 0.5, 0.7, 0.9, 1.1, 0.4, 0.6]), base, seed=0)
    # what resampling images would claim
    assert images["n"] == 8 and images["min_p"] == pytest.approx(2 / 256, abs=1e-6)


def test_paired_tests_and_summary_of_a_table_with_subjects():
    rows = [{"task": "t", "method": m, "kind": k, "image_id": f"chase_db1/Image_{c}{eye}", "subject": f"chase_db1/{c}",
             "variant": "v",
             "sigma": 25.0, "scale": 1, "psnr_fov": 28.0 + int(c) * 0.5 + d + (0.1 if eye == "R" else 0.0)}
            for m, k, d in (("nlmeans", "baseline", 0.0),
                            ("dncnn", "model", 1.0)) for c in ("11", "12", "13", "14") for eye in "LR"]
    table = E.per_image_table(rows)
    stats = E.summarise(table, seed=0)["dncnn"]["v"]
    assert (stats["n_images"], stats["n_subjects"]) == (8, 4)
    assert (stats["psnr_fov"]["n_images"], stats["psnr_fov"]["n_subjects"]) == (8, 4)
    t = E.paired_tests(table, seed=0)["v"]["models"]["dncnn"]["psnr_fov"]
    assert (t["n"], t["n_images"], t["n_subjects"],
            t["min_p"]) == (4, 8, 4, 0.125) and t["mean_diff"] == pytest.approx(1.0)


def test_the_per_image_table_carries_the_subjects_of_real_chase_db1_ids(chase_dir):
    from medrestore.data.sources import _parse_chase

    manifest = {"images": [r.as_dict(chase_dir) for r in _parse_chase(chase_dir)]}
    assert len(manifest["images"]) == 28
    test_ids = [f"chase_db1/Image_{k}{eye}" for k in ("11", "12", "13", "14") for eye in "LR"]
    old_meta = {"test": [{"id": i, "source_id": i} for i in test_ids]}  # a patches.json written before subjects
    subjects = E.subjects_by_image(old_meta, manifest)
    assert subjects["chase_db1/Image_11L"] == subjects["chase_db1/Image_11R"] == "chase_db1/11"
    assert len(set(subjects.values())) == 4
    # as the patchify stage writes it
    new_meta = {"test": [{"id": i, "source_id": i, "subject": subjects[i]} for i in test_ids]}
    assert E.subjects_by_image(new_meta) == subjects
    assert E.subjects_by_image(old_meta) == {i: i for i in test_ids}  # nothing known: each image its own subject
    regions = {"test": [{"id": "chase_db1/Image_11L#r01", "source_id": "chase_db1/Image_11L"}]}
    assert E.subjects_by_image(regions, manifest) == {"chase_db1/Image_11L#r01": "chase_db1/Image_11L#r01"}
    rows = [{"task": "t", "method": "degraded", "kind": "input", "image_id": i, "subject": subjects[i],
             "variant": "s25", "sigma": 25.0,
             "scale": 1, "psnr_fov": 20.0 + n} for n, i in enumerate(test_ids)]
    table = E.per_image_table(rows)
    assert list(table["subject"]) == [f"chase_db1/{k}" for k in ("11", "12", "13", "14") for _ in "LR"]
    assert E.image_subjects(table)["chase_db1/Image_14R"] == "chase_db1/14"
    stats = E.summarise(table, seed=0)["degraded"]["s25"]["psnr_fov"]
    assert (stats["n_images"], stats["n_subjects"]) == (8, 4) and stats["mean"] == pytest.approx(23.5)
