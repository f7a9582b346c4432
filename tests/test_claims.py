"""Verdicts of the papers' claims come from the per-image numbers."""

import pandas as pd
import pytest

from medrestore.models import BASELINES, MODELS
from medrestore.report.claims import CLAIMS, PAPERS, Claim, check_claim, check_claims

CLAIM = Claim("Hayee2017", "A beats B", "denoise-g25", "s25", "psnr_fov", "dncnn", "redae")


def table(a: list[float], b: list[float], metric: str = "psnr_fov") -> pd.DataFrame:
    rows = [{"method": m, "variant": "s25", "image_id": f"img{i}",
             metric: v} for m, vals in (("dncnn", a), ("redae", b)) for i, v in enumerate(vals)]
    return pd.DataFrame(rows)


def test_a_consistent_win_is_reproduced_and_a_loss_is_not():
    assert check_claim(CLAIM, table([31, 32, 33, 34], [30, 31, 32, 33]), {}, 0)["verdict"] == "reproduced"
    lost = check_claim(CLAIM, table([29, 30, 31, 32], [30, 31, 32, 33]), {}, 0)
    assert lost["verdict"] == "not reproduced" and lost["difference"]["mean"] == pytest.approx(-1.0)


def test_a_win_on_some_images_only_is_not_reproduced():
    mixed = check_claim(CLAIM, table([33, 30, 33, 30], [31, 31, 31, 31]), {}, 0)
    assert mixed["difference"]["mean"] > 0 and mixed["difference"]["ci95"][0] <= 0
    assert mixed["verdict"] == "not reproduced" and mixed["why"] == "interval includes 0"


def test_a_model_that_did_not_converge_makes_no_claim_either_way():
    result = check_claim(CLAIM, table([31, 32, 33, 34], [30, 31, 32, 33]), {"dncnn": False, "redae": True}, 0)
    assert result["verdict"] == "not converged" and "dncnn" in result["why"]
    assert result["values"]["dncnn"]["mean"] == pytest.approx(32.5)  # the numbers are still shown


def test_lower_is_better_metrics_turn_the_difference():
    claim = Claim("Zhao2019", "A beats B", "enhance", "s25", "niqe", "dncnn", "redae")
    assert check_claim(claim, table([4, 4.1, 4.2, 4.3], [5, 5.1, 5.2, 5.3], "niqe"), {}, 0)["verdict"] == "reproduced"


def test_a_method_missing_from_the_run_is_not_run(tmp_path):
    assert check_claim(CLAIM, table([31, 32], [30, 31]).query("method == 'dncnn'"), {}, 0)["verdict"] == "not run"
    results = check_claims(tmp_path / "eval", {}, 0, (CLAIM,))
    assert results[0]["verdict"] == "not run"


def test_at_least_eight_claims_from_the_papers_on_registered_methods():
    assert len(CLAIMS) >= 8
    assert {c.paper for c in CLAIMS} == set(PAPERS)
    names = set(MODELS) | set(BASELINES) | {"dncnn-srgan"}
    for c in CLAIMS:
        assert c.better in names and c.worse in names and c.better != c.worse


def test_a_claim_is_judged_over_subjects_with_both_eyes_together():
    """Four children, both eyes each: the difference's interval is the evaluation's over the four
    subjects' mean differences, and the table says what it rests on."""
    import numpy as np

    from medrestore.evaluation.scoring import interval
    from medrestore.report.claims import claims_rows

    eyes = [f"chase_db1/Image_{c}{e}" for c in ("11", "12", "13", "14") for e in "LR"]
    subject = {i: f"chase_db1/{i[-3:-1]}" for i in eyes}
    better, worse = [31.0, 31.2, 29.5, 29.4, 32.0, 32.1, 30.0, 30.3], [30.1, 30.2, 29.3, 29.1, 30.9, 31.2, 29.8, 29.9]
    t = pd.DataFrame([{"method": m, "variant": "s25", "image_id": i, "subject": subject[i], "psnr_fov": v}
                      for m, vals in (("dncnn", better), ("redae", worse)) for i, v in zip(eyes, vals)])
    result = check_claim(CLAIM, t, {}, 0)
    d = result["difference"]
    expected = interval(np.array(better) - np.array(worse), 0, [subject[i] for i in eyes], digits=4)
    assert (
        d["ci95"] == expected["ci95"] and d["mean"] == expected["mean"] and (d["n_images"], d["n_subjects"]) == (8, 4)
    )
    assert result["values"]["dncnn"]["n_subjects"] == 4
    header, rows = claims_rows([result])
    assert rows[0][header.index("images / subjects")] == "8 / 4"
    no_subjects = check_claim(CLAIM, t.drop(columns="subject"), {}, 0)["difference"]  # an older per_image.csv: images
    assert (no_subjects["n_images"], no_subjects["n_subjects"]) == (8, 8)


def test_a_claim_on_a_model_below_its_input_is_failed(tmp_path, chase_dir):
    """Real CHASE_DB1 images, degraded, "restored" by a red checkerboard (cyclegan-fc) and scored with
    the project's metrics (tests/gates_data.py): the paper's claims on it are failed, not lost or won."""
    from gates_data import BROKEN, VARIANT, write_workspace

    write_workspace(tmp_path, chase_dir)
    on_enhance = tuple(c for c in CLAIMS if c.task == "enhance" and c.variant == VARIANT)
    assert on_enhance and all(BROKEN in (c.better, c.worse) for c in on_enhance)
    converged = {"enhance": {BROKEN: {"converged": True}, "cyclegan": {"converged": True}}}
    results = check_claims(tmp_path / "eval", converged, 0, on_enhance)
    assert {r["verdict"] for r in results} == {"failed"}
    assert all(r["why"] == f"failed: below its input: {BROKEN}" for r in results)
    # a failed model that did not converge either: failed says more than not converged
    converged["enhance"][BROKEN]["converged"] = False
    assert {r["verdict"] for r in check_claims(tmp_path / "eval", converged, 0, on_enhance)} == {"failed"}
    psnr = Claim("Zhao2019", "CycleGAN-FC beats CycleGAN in PSNR", "enhance", VARIANT, "psnr_fov", BROKEN, "cyclegan")
    shown = check_claims(tmp_path / "eval", converged, 0, (psnr,))[0]
    # numbers still shown
    assert shown["verdict"] == "failed" and shown["values"][BROKEN]["mean"] < shown["values"]["cyclegan"]["mean"]
    # the other model, above its input, still makes its claims
    other = Claim("Zhao2019", "cyclegan beats the input", "enhance", VARIANT, "psnr_fov", "cyclegan", "degraded")
    assert check_claims(tmp_path / "eval", converged, 0, (other,))[0]["verdict"] == "reproduced"
