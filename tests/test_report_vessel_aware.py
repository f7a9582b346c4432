"""medrestore.report.vessel_aware: vessel-aware models against their plain twin, paired over images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medrestore.evaluation.scoring import summarise
from medrestore.report.vessel_aware import PSNR_BUDGET_DB, compare, sweep_figure, table_rows, vessel_groups

TRAIN = {
    "runs": {"g-cdae": {"task": "g", "model": "cdae"}},
    "vessel": {
        "g-cdae-vfeat": {"task": "g", "model": "cdae", "method": "cdae-vfeat", "base": "g-cdae",
                         "overrides": {"perceptual": {"backbone": "vessel", "weight": 0.001}}},
        "g-cdae-vprob": {"task": "g", "model": "cdae", "method": "cdae-vprob", "base": "g-cdae",
                         "overrides": {"perceptual": {"backbone": "vessel_prob", "weight": 0.002, "thin_weight": 4.0}}},
    },
}


def _table() -> pd.DataFrame:
    """Four images: vfeat keeps more thin vessels on every image at a 0.1 dB cost; vprob costs 0.5 dB
    and gains nothing consistent."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        base_psnr, base_thin = 33 + rng.normal(0, 0.5), 0.02 + rng.normal(0, 0.01)
        for method, kind, dp, dt in (("cdae", "model", 0, 0), ("cdae-vfeat", "model", -0.1, 0.05 + 0.01 * i),
                                     ("cdae-vprob", "model", -0.5, (-1) ** i * 0.03),
                                     ("nlmeans", "baseline", -1.0, -0.02),
                                     ("degraded", "input", -10, 0.4)):
            rows.append({"task": "g", "method": method, "kind": kind, "image_id": f"im{i}", "variant": "s25",
                         "psnr_fov": base_psnr + dp, "indep_thin_recall_above_chance": base_thin + dt,
                         "indep_invented_rate": 0.3,
                         "manual_thin_recall_above_chance": base_thin + dt, "manual_invented_rate": 0.3})
    return pd.DataFrame(rows)


def test_groups_name_the_plain_twin_the_form_and_the_weight():
    groups = vessel_groups(TRAIN)
    assert list(groups) == [("g", "cdae")]
    assert [(r["method"], r["form"], r["weight"]) for r in groups[("g", "cdae")]] == [
        ("cdae-vfeat", "vessel", 0.001), ("cdae-vprob", "vessel_prob", 0.002)]


def test_the_verdict_needs_a_rise_above_zero_and_a_cost_below_the_budget():
    table = _table()
    results = {r["method"]: r for r in compare(table, "s25", "cdae", vessel_groups(TRAIN)[("g", "cdae")], seed=1)}
    feat, prob = results["cdae-vfeat"], results["cdae-vprob"]
    assert feat["differences"]["psnr_fov"]["mean"] == pytest.approx(-0.1)
    assert feat["differences"]["indep_thin_recall_above_chance"]["mean"] == pytest.approx(0.065)
    assert feat["recall_rose"] and feat["psnr_cost_db"] == pytest.approx(0.1) and feat["within_budget"]
    assert (feat["differences"]["psnr_fov"]["n_images"], feat["differences"]["psnr_fov"]["n_subjects"]) == (4, 4)
    paired_eyes = table.assign(subject=table["image_id"].map({"im0": "a", "im1": "a", "im2": "b", "im3": "b"}))
    by_child = compare(paired_eyes, "s25", "cdae", vessel_groups(TRAIN)[("g", "cdae")],
                       seed=1)[0]["differences"]["psnr_fov"]
    assert (by_child["n_images"], by_child["n_subjects"]) == (4, 2)  # two eyes per child: two subjects
    assert "rose" in feat["verdict"] and f"below {PSNR_BUDGET_DB}" in feat["verdict"]
    assert not prob["recall_rose"] and not prob["within_budget"] and prob["psnr_cost_db"] == pytest.approx(0.5)
    assert "no rise" in prob["verdict"] and "not below" in prob["verdict"]


def test_table_rows_show_the_input_baselines_the_plain_model_and_the_variants():
    table = _table()
    table["sigma"], table["scale"] = 25.0, 1
    summary = {"task": "g", "methods": {}, "variants": ["s25"]}
    # summarise needs every registry column: fill the ones this table lacks
    from medrestore.evaluation.metrics import COLUMNS

    for col in COLUMNS:
        if col not in table:
            table[col] = np.nan
    summary["methods"] = summarise(table, seed=1)
    results = compare(table, "s25", "cdae", vessel_groups(TRAIN)[("g", "cdae")], seed=1)
    header, rows = table_rows(summary, "s25", "cdae", results, {"cdae-vprob": {"converged": False}})
    assert [r[0] for r in rows] == ["degraded", "nlmeans", "cdae", "cdae-vfeat", "cdae-vprob (not converged)"]
    assert rows[2][1] == "plain" and rows[3][1].startswith("segmenter features (0.001)")
    assert len(header) == len(rows[0]) and header[-1] == "images / subjects" and rows[2][-1] == "4 / 4"
    png = sweep_figure({"points": [{"task": "g", "variant": "s25", "form": "vessel", "weight": w, "psnr_fov": 33 - w,
                                    "indep_thin_recall_above_chance": 0.02 + w / 10,
                                    "indep_invented_rate": 0.3} for w in (0.5, 1, 2)]},
                       summary, "s25", "cdae")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert sweep_figure({"points": []}, summary, "s25", "cdae") is None


def test_a_sweep_of_other_test_images_is_not_drawn_and_says_how_to_redo_it(tmp_path):
    import json

    from medrestore.report.vessel_aware import sweep_on_split

    (tmp_path / "patches.json").write_text(
        json.dumps({"splits": {"test": ["chase_db1/Image_11L", "chase_db1/Image_11R"]}})
    )
    point = {"task": "g", "variant": "s25", "form": "vessel", "weight": 0.001, "psnr_fov": 33.0}
    older = {"points": [point]}  # collected before the file recorded its test images
    kept, why = sweep_on_split(older, tmp_path)
    assert kept["points"] == [] and "does not record the test images" in why and "medrestore sweep --replace" in why
    other = {"points": [point], "test_images": ["chase_db1/Image_02L", "chase_db1/Image_02R"]}
    kept, why = sweep_on_split(other, tmp_path)
    assert kept["points"] == [] and "scored on other test images" in why
    same = {"points": [point], "test_images": ["chase_db1/Image_11L", "chase_db1/Image_11R"]}
    assert sweep_on_split(same, tmp_path) == (same, None)


def test_a_sweep_trained_on_other_data_than_this_run_is_not_drawn():
    """The sweep's point at this run's own weight must score what this run's model scores."""
    from medrestore.report.vessel_aware import sweep_against_this_run

    summary = {"task": "g", "methods": {"cdae-vfeat": {"s25": {"psnr_fov": {"mean": 33.90}}}}}
    results = [{"method": "cdae-vfeat", "weight": 0.001}]
    point = {"task": "g", "variant": "s25", "method": "cdae-vfeat", "form": "vessel", "psnr_fov": 33.768}
    older = {"points": [{**point, "weight": 0.001}, {**point, "weight": 0.0003, "psnr_fov": 34.19}]}
    why = sweep_against_this_run(older, summary, "s25", results)
    assert "33.77 dB" in why and "33.90 dB" in why and "medrestore sweep --replace" in why
    same = {"points": [{**point, "weight": 0.001, "psnr_fov": 33.900000}, {**point, "weight": 0.0003}]}
    assert sweep_against_this_run(same, summary, "s25", results) is None
    # a sweep without this run's own weight cannot be checked this way: drawn
    assert sweep_against_this_run({"points": [{**point, "weight": 0.0003}]}, summary, "s25", results) is None
