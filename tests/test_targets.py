"""Verdicts of the quality targets come from the per-image numbers and the convergence records."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from medrestore.models import BASELINES, MODELS
from medrestore.report.targets import BEST, TARGETS, Target, best_model, check_target, check_targets, targets_rows

REPO = Path(__file__).resolve().parents[1]

ABOVE = Target("A at least B + 2", "test", "denoise-g25", "s25", "psnr_fov", "dncnn", "bm3d", margin=2.0)
CONVERGED = {"converged": True, "steps": 3000, "last_quarter_gain_db": 0.05}


def table(scores: dict[str, list[float]], metric: str = "psnr_fov",
          kinds: dict[str, str] | None = None) -> pd.DataFrame:
    kinds = kinds or {}
    return pd.DataFrame([{"method": m, "kind": kinds.get(m, "model"), "variant": "s25", "image_id": f"img{i}",
                          metric: v}
                         for m, vals in scores.items() for i, v in enumerate(vals)])


def test_a_margin_is_met_only_on_the_mean_difference_reaching_it():
    base = [30.0, 31.0, 32.0, 33.0]
    met = check_target(ABOVE, table({"dncnn": [v + 2.1 for v in base], "bm3d": base}), {"dncnn": CONVERGED}, 0)
    assert met["verdict"] == "met" and met["difference"]["mean"] == pytest.approx(2.1)
    missed = check_target(ABOVE, table({"dncnn": [v + 1.9 for v in base], "bm3d": base}), {"dncnn": CONVERGED}, 0)
    assert missed["verdict"] == "missed" and "converged (3000 steps" in missed["training"][0]
    header, rows = targets_rows([missed])
    assert rows[0][header.index("difference - margin [95% CI]")].startswith("-0.100")


def test_a_factor_and_a_lower_is_better_metric_turn_the_comparison():
    invented = Target("invents at most half the input's share", "test", "denoise-g25", "s25", "manual_invented_rate",
                      "cdae", "degraded", factor=0.5)
    scores = {"degraded": [0.76, 0.74, 0.78, 0.75], "cdae": [0.30, 0.35, 0.32, 0.36]}
    assert check_target(invented, table(scores, "manual_invented_rate"), {"cdae": CONVERGED}, 0)["verdict"] == "met"
    scores["cdae"] = [0.40, 0.41, 0.42, 0.43]
    assert check_target(invented, table(scores, "manual_invented_rate"), {"cdae": CONVERGED}, 0)["verdict"] == "missed"


def test_the_best_model_is_the_highest_converged_one_and_an_unconverged_model_is_no_verdict():
    scores = {"bm3d": [33.0] * 4, "cdae": [33.1] * 4, "irunet": [32.7] * 4, "dncnn": [36.0] * 4}
    t = table(scores, kinds={"bm3d": "baseline"})
    conv = {"cdae": CONVERGED, "irunet": CONVERGED,
            "dncnn": {"converged": False, "why": "still improving", "steps": 300}}
    assert best_model(t, "s25", conv) == "cdae"  # dncnn scores higher but did not converge; bm3d is no trained model
    best = Target("best at least CBM3D + 2", "test", "denoise-g25", "s25", "psnr_fov", BEST, "bm3d", margin=2.0)
    r = check_target(best, t, conv, 0)
    assert r["subject_method"] == "cdae" and r["verdict"] == "missed"
    unconv = check_target(ABOVE, t, conv, 0)
    assert unconv["verdict"] == "not converged" and unconv["values"]["dncnn"] == pytest.approx(36.0)
    assert unconv["training"] == ["dncnn: not converged (300 steps; still improving)"]
    nothing = check_target(best, t, {m: {**v, "converged": False} for m, v in conv.items()}, 0)
    assert nothing["verdict"] == "not converged" and nothing["subject_method"] is None


def test_a_task_or_method_missing_from_the_run_is_not_run(tmp_path):
    assert check_target(ABOVE, table({"dncnn": [31.0, 32.0]}), {}, 0)["verdict"] == "not run"
    assert check_targets(tmp_path / "eval", {}, 0, targets=(ABOVE,))[0]["verdict"] == "not run"


def test_check_targets_reads_steps_from_the_models_folder(tmp_path):
    (tmp_path / "eval" / "denoise-g25").mkdir(parents=True)
    table({"dncnn": [35.0, 36.0], "bm3d": [33.0, 33.5]},
          kinds={"bm3d": "baseline"}).to_csv(tmp_path / "eval" / "denoise-g25" / "per_image.csv", index=False)
    (tmp_path / "models" / "denoise-g25" / "dncnn").mkdir(parents=True)
    (tmp_path / "models" / "denoise-g25" / "dncnn" / "metrics.json").write_text(json.dumps({"steps": 1234}))
    conv = {"denoise-g25": {"dncnn": {"converged": True, "last_quarter_gain_db": 0.1}}}
    r = check_targets(tmp_path / "eval", conv, 0, tmp_path / "models", targets=(ABOVE,))[0]
    assert r["verdict"] == "met" and "1234 steps" in r["training"][0]


def test_the_targets_name_registered_methods_and_the_default_tasks():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    tasks = params["corrupt"]["tasks"]
    names = set(MODELS) | set(BASELINES) | {"clean", "degraded", BEST}
    assert len(TARGETS) >= 9
    for t in TARGETS:
        assert t.task in tasks and t.variant in tasks[t.task]["test"], t
        assert t.subject in names and t.reference in names and t.subject != t.reference, t


def test_a_target_states_the_images_and_subjects_of_its_interval():
    eyes = [f"chase_db1/Image_{c}{e}" for c in ("11", "12", "13", "14") for e in "LR"]
    base = [30.0, 30.1, 31.0, 31.2, 32.0, 31.9, 33.0, 33.3]
    t = table({"dncnn": [v + 2.1 for v in base], "bm3d": base})
    t["image_id"] = eyes * 2
    t["subject"] = [f"chase_db1/{i[-3:-1]}" for i in eyes] * 2
    result = check_target(ABOVE, t, {"dncnn": CONVERGED}, 0)
    assert result["verdict"] == "met" and result["difference"]["mean"] == pytest.approx(2.1)
    assert (result["difference"]["n_images"], result["difference"]["n_subjects"]) == (8, 4)
    header, rows = targets_rows([result])
    assert rows[0][header.index("images / subjects")] == "8 / 4"


def test_the_best_model_is_never_one_below_its_input(tmp_path, chase_dir):
    """Real CHASE_DB1 images, degraded, "restored" by a red checkerboard (cyclegan-fc, converged but
    far below its input) and scored with the project's metrics (tests/gates_data.py)."""
    from gates_data import BROKEN, VARIANT, evaluation, write_workspace

    table, _ = evaluation(chase_dir)
    conv = {BROKEN: CONVERGED, "cyclegan": CONVERGED}
    assert best_model(table, VARIANT, conv) == "cyclegan"
    assert best_model(table[table["method"] != "cyclegan"], VARIANT, conv) is None  # only the failed one left
    over_input = Target("the best enhancer above its input", "test", "enhance", VARIANT, "psnr_fov", BEST, "degraded")
    assert check_target(over_input, table, conv, 0)["subject_method"] == "cyclegan"
    named = Target("CycleGAN-FC above its input", "test", "enhance", VARIANT, "psnr_fov", BROKEN, "degraded")
    result = check_target(named, table, conv, 0)
    assert result["verdict"] == "failed" and result["difference"]["mean"] < 0
    write_workspace(tmp_path, chase_dir, all_broken=True)  # cyclegan: the inverted image, below its input too
    nothing = check_targets(tmp_path / "eval", {"enhance": conv}, 0, tmp_path / "models", (over_input,))[0]
    assert nothing["subject_method"] is None and nothing["verdict"] == "failed"
    assert nothing["why"] == "no converged model beats the degraded input"
