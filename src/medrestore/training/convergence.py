"""Whether a training run converged, read from its validation curve.

A number in the report is a claim about a paper's method only when the network behind it has stopped
improving. The rule: the best validation PSNR reached by the end of the run is less than
``MIN_GAIN_DB`` above the best reached by the start of the run's last quarter (``WINDOW``). The best
so far is used rather than the last value, so that one noisy validation neither hides nor fakes a
plateau. A curve of fewer than ``MIN_VAL_POINTS`` validations is too short to tell a plateau from
noise (four points over a GAN's 80 steps say nothing): not converged. A run with no validation at or
before the start of its last quarter cannot show a plateau either and counts as not converged. A curve whose last
validation ends ``MIN_GAIN_DB`` or more below its
best is no plateau either (a GAN trading PSNR for its adversary, a fine-tuning that undoes its
start): not converged. The engine writes this verdict into the model's ``metrics.json``; the report
adds one rule that needs the other runs (a fine-tuned or chained model converged only if the model
it starts from did: :func:`medrestore.report.policy.task_convergence`).

Caveat, stated in the report: a schedule that decays the learning rate to near zero (cosine) flattens
the last quarter by itself; the rule then says "no more gain at this schedule's length", which is what
a fixed budget can promise, not that a longer schedule could not do better.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from pathlib import Path

MIN_GAIN_DB = 0.2
WINDOW = 0.25
#: The fewest validation points a curve needs before it can be judged converged.
MIN_VAL_POINTS = 8


def convergence(points: Iterable[tuple[int, float]], steps: int | None = None, *, min_gain_db: float = MIN_GAIN_DB,
                window: float = WINDOW) -> dict:
    """``points``: (step, validation PSNR) pairs; ``steps``: the run's length (default: the last
    validated step). Returns ``converged``, ``last_quarter_gain_db`` (None when undefined) and the
    rule as text."""
    pts = sorted((int(s), float(p)) for s, p in points if p is not None and math.isfinite(float(p)))
    rule = (f"at least {MIN_VAL_POINTS} validations, best validation PSNR gained < {min_gain_db:g} dB over the last "
            f"{window:.0%} of the steps and the last validation within {min_gain_db:g} dB of the best")
    if not pts:
        return {"converged": False, "last_quarter_gain_db": None, "rule": rule, "why": "no validation"}
    end = int(steps) if steps else pts[-1][0]
    start = end - window * end
    before = [p for s, p in pts if s <= start]
    few = f"only {len(pts)} validation points; at least {MIN_VAL_POINTS} needed" if len(pts) < MIN_VAL_POINTS else None
    if not before:
        return {"converged": False, "last_quarter_gain_db": None, "rule": rule,
                "why": few or "no validation before the last quarter"}
    best = max(p for _, p in pts)
    gain = best - max(before)
    fall = best - pts[-1][1]
    out = {"converged": bool(gain < min_gain_db), "last_quarter_gain_db": round(gain, 4),
           "final_drop_db": round(fall, 4), "rule": rule}
    if few:
        out.update(converged=False, why=few)
    elif not out["converged"]:
        out["why"] = "still improving"
    elif fall >= min_gain_db:
        out.update(converged=False, why=f"validation PSNR ended {fall:.2f} dB below its best")
    return out


def curve_points(curve_csv: str | Path) -> list[tuple[int, float]]:
    """(step, val_psnr) of a ``curve.csv`` written by the training engine (a path or its text)."""
    text = Path(curve_csv).read_text() if isinstance(curve_csv, Path) or "\n" not in str(curve_csv) else str(curve_csv)
    out = []
    for row in csv.DictReader(io.StringIO(text)):
        value = row.get("val_psnr", "")
        if value not in ("", None):
            out.append((int(row["step"]), float(value)))
    return out


def model_convergence(folder: Path) -> dict | None:
    """The rule applied to a trained model folder's ``curve.csv`` and ``metrics.json`` steps (a curve
    of fewer than :data:`MIN_VAL_POINTS` validations is not converged); None when the folder has no
    curve (not trained by the engine)."""
    folder = Path(folder)
    curve = folder / "curve.csv"
    if not curve.is_file():
        return None
    steps = None
    metrics = folder / "metrics.json"
    if metrics.is_file():
        import json

        steps = json.loads(metrics.read_text()).get("steps")
    return convergence(curve_points(curve), steps)
