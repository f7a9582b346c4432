"""The report's tables (medrestore.report.tables): columns, titles, decimals and the direction of "best"
come from the metric registry."""

from medrestore.evaluation.metrics import LOWER_IS_BETTER, TABLE_IMAGE
from medrestore.report.tables import paired_rows, table_metrics, task_table


def _m(v: float, half: float = 0.1) -> dict:
    return {"mean": v, "ci95": [v - half, v + half], "n_images": 8, "n_subjects": 4}


SUMMARY = {"variants": ["s25"], "methods": {
    "degraded": {"s25": {"kind": "input", "n": 8, "n_images": 8, "n_subjects": 4, "psnr": _m(21.0), "ssim": _m(0.5),
                         "niqe": _m(9.0), "ref_invented_rate": _m(0.7)}},
    "median": {"s25": {"kind": "baseline", "n": 8, "n_images": 8, "n_subjects": 4, "psnr": _m(28.0),
                       "ssim": _m(0.81234, 0.0), "niqe": _m(5.0), "ref_invented_rate": _m(0.2)}},
    "nlmeans": {"s25": {"kind": "baseline", "n": 8, "psnr": _m(29.0), "ssim": _m(0.8), "niqe": _m(6.0),
                        "ref_invented_rate": _m(0.3)}},
}, "paired_tests": {"s25": {"baseline": "nlmeans", "models": {"dncnn": {
    "psnr": {"n": 4, "n_images": 8, "n_subjects": 4, "mean_diff": 1.234, "ci95": [0.5, 2.0], "wilcoxon_p": 0.125,
             "min_p": 0.125, "model_better": 4, "baseline_better": 0},
    "niqe": {"n": 4, "mean_diff": -0.5, "ci95": [-1.0, 0.1], "wilcoxon_p": 0.25, "min_p": 0.125, "model_better": 3,
             "baseline_better": 1,
             "higher_is_better": False},
    "psnr_green_fov": {"n": 4, "mean_diff": 0.3, "ci95": [0.1, 0.5], "wilcoxon_p": 0.5, "min_p": 0.125,
                       "model_better": 3, "baseline_better": 1},
}}}}}


def test_columns_titles_and_decimals_come_from_the_registry():
    assert table_metrics(SUMMARY, "s25") == (*TABLE_IMAGE, "ref_auc", "ref_dice", "ref_thin_recall_above_chance",
                                             "ref_invented_rate")
    with_manual = {"methods": {"x": {"s25": {"manual_auc": _m(0.9)}}}}
    # the manual masks, where the dataset has them
    assert table_metrics(with_manual, "s25")[-1] == "manual_invented_rate"
    header, rows = task_table(SUMMARY, "s25")
    assert header[:4] == ["method", "kind", "psnr", "psnr_fov"] and "vessels invented (vs clean)" in header
    by = {r[0]: dict(zip(header, r)) for r in rows}
    assert [r[0] for r in rows] == ["degraded", "median", "nlmeans"]  # input, then baselines
    # a point interval: the mean alone
    assert by["nlmeans"]["psnr"] == "**29.00 [28.90, 29.10]**" and by["median"]["ssim"] == "**0.812**"
    assert by["median"]["psnr_fov"] == "–"
    assert header[-1] == "images / subjects" and by["median"]["images / subjects"] == "8 / 4"
    assert by["nlmeans"]["images / subjects"] == "8 / –"  # a summary without subjects: the images alone


def test_lower_is_better_metrics_mark_the_lowest():
    assert {"niqe", "ref_invented_rate"} <= LOWER_IS_BETTER
    header, rows = task_table(SUMMARY, "s25")
    by = {r[0]: dict(zip(header, r)) for r in rows}
    assert by["median"]["niqe"].startswith("**") and by["median"]["vessels invented (vs clean)"].startswith("**")
    assert not by["degraded"]["niqe"].startswith("**")  # the input is never called best


def test_paired_rows_show_the_tables_paired_metrics_in_their_direction():
    header, rows = paired_rows(SUMMARY, "s25")
    assert header[1] == "vs nlmeans"
    assert [r[1] for r in rows] == ["psnr", "niqe"]  # psnr_green_fov is tested but not a column of the tables
    assert rows[0][2] == "+1.23 [+0.50, +2.00]" and rows[0][3] == "4 / 0 of 4"
    assert rows[1][3] == "1 / 3 of 4"  # lower is better: baseline better / model better
    assert header[3] == "model better / worse (subjects)" and header[-1] == "images / subjects"
    assert rows[0][-1] == "8 / 4" and rows[1][-1] == "4 / –"
