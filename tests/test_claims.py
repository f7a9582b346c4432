"""Verdicts of the papers' claims come from the per-image numbers."""

import pandas as pd
import pytest

from medrestore.claims import CLAIMS, PAPERS, Claim, check_claim, check_claims
from medrestore.models import BASELINES, MODELS

CLAIM = Claim("Hayee2017", "A beats B", "denoise-g25", "s25", "psnr_fov", "dncnn", "redae")


def table(a: list[float], b: list[float], metric: str = "psnr_fov") -> pd.DataFrame:
    rows = [{"method": m, "variant": "s25", "image_id": f"img{i}", metric: v} for m, vals in (("dncnn", a), ("redae", b)) for i, v in enumerate(vals)]
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
