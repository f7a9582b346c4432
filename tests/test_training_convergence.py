"""The convergence rule and the learning-rate warm-up (pure functions; the engine's use of them is
tested in tests/test_training.py)."""

import math

import pytest

from medrestore.training.config import TrainConfig, lr_factor
from medrestore.training.convergence import MIN_VAL_POINTS, convergence, curve_points, model_convergence


def test_a_curve_still_climbing_in_its_last_quarter_has_not_converged():
    rising = [(100 * i, 20 + 1.5 * math.log(i)) for i in range(1, 21)]
    verdict = convergence(rising, 2000)
    assert not verdict["converged"] and verdict["last_quarter_gain_db"] > 0.2


def test_a_plateau_has_converged_and_a_small_dip_does_not_change_that():
    plateau = [(100 * i, 30 - 5 * math.exp(-i / 2)) for i in range(1, 21)]
    assert convergence(plateau, 2000)["converged"]
    dipped = plateau[:-1] + [(2000, plateau[-2][1] - 0.1)]  # validation noise: the best so far still counts
    assert convergence(dipped, 2000)["converged"]


def test_a_curve_that_ends_well_below_its_best_is_no_plateau():
    """A GAN trading PSNR for its adversary, or a fine-tuning that undoes its start."""
    plateau = [(100 * i, 30 - 5 * math.exp(-i / 2)) for i in range(1, 21)]
    fallen = plateau[:-1] + [(2000, 25.0)]
    verdict = convergence(fallen, 2000)
    assert not verdict["converged"] and verdict["final_drop_db"] == pytest.approx(
        30 - 5 * math.exp(-9.5) - 25.0, abs=1e-4
    )
    assert verdict["why"].startswith("validation PSNR ended 5.00 dB below its best")


def test_a_run_without_validation_before_its_last_quarter_cannot_show_a_plateau():
    verdict = convergence([(1000, 30.0)], 1000)
    assert not verdict["converged"] and verdict["last_quarter_gain_db"] is None
    assert not convergence([], 1000)["converged"]
    # enough points, all in the last quarter of 2000 steps
    late = [(1600 + 25 * i, 30.0) for i in range(MIN_VAL_POINTS)]
    assert convergence(late, 2000)["why"] == "no validation before the last quarter"


def test_the_threshold_is_on_the_gain_over_the_last_quarter():
    flat = [(125 * i, 30.0) for i in range(1, 7)]  # steps 125 .. 750, then the last quarter
    assert convergence([*flat, (875, 30.1), (1000, 30.19)], 1000)["converged"]
    assert not convergence([*flat, (875, 30.1), (1000, 30.21)], 1000)["converged"]
    assert convergence([*flat, (875, 30.1), (1000, 30.21)], 1000, min_gain_db=0.3)["converged"]


def test_a_curve_of_fewer_than_eight_validations_is_not_judged_converged(tmp_path):
    """Four flat validations over a GAN's 80 steps look like a plateau but say nothing."""
    assert MIN_VAL_POINTS == 8
    four = [(20, 14.9), (40, 15.0), (60, 15.0), (80, 15.0)]
    verdict = convergence(four, 80)
    assert not verdict["converged"] and verdict["why"] == "only 4 validation points; at least 8 needed"
    assert verdict["last_quarter_gain_db"] == pytest.approx(0.0)  # the gain is still reported
    # the same flat curve validated every 10 steps: 8 points, judged by the plateau rule
    assert convergence([(10 * i, 15.0) for i in range(1, 9)], 80)["converged"]
    # a model folder as the engine writes it: the report reads the same verdict
    (tmp_path / "curve.csv").write_text(
        "step,train_loss,lr,val_loss,val_psnr\n" + "".join(f"{s},0.1,0.0002,0.1,{p}\n" for s, p in four)
    )
    (tmp_path / "metrics.json").write_text('{"steps": 80}')
    folder = model_convergence(tmp_path)
    assert not folder["converged"] and folder["why"] == "only 4 validation points; at least 8 needed"


def test_curve_points_reads_the_engines_csv():
    text = "step,train_loss,lr,val_loss,val_psnr\n1,0.1,0.001,,\n50,0.05,0.001,0.04,22.5\n100,0.04,0.001,0.03,23.25\n"
    assert curve_points(text) == [(50, 22.5), (100, 23.25)]


@pytest.mark.parametrize("schedule", ["cosine", "constant", "step"])
def test_warm_up_rises_linearly_then_follows_the_schedule(schedule):
    plain = lr_factor(TrainConfig(model="dncnn", schedule=schedule, max_steps=1000))
    warm = lr_factor(TrainConfig(model="dncnn", schedule=schedule, max_steps=1000, warmup_steps=100))
    assert warm(0) == pytest.approx(plain(0) / 100)
    assert warm(49) == pytest.approx(plain(49) * 0.5)
    for s in (99, 100, 500, 999):
        assert warm(s) == pytest.approx(plain(s))
