"""The sanity gate on trained models: a restoration that scores below its own input has failed.

A trained model whose mean :data:`~medrestore.evaluation.metrics.BEST_BY` (PSNR inside the FOV) over the test
images of one test corruption is below that of the degraded input (the evaluation's row
:data:`INPUT`) is **failed** on that corruption: leaving the image alone would have done better. A
failed model is never called best, never becomes a task's champion, its claims on that corruption
get the verdict ``failed``, and its rows and figure panels say so (:data:`FAILED`).

:func:`failed_models` is the one rule; :func:`failed_in_summary` and :func:`failed_in_table` read its
inputs from an evaluation summary (``summary.json``) or the per-image table (``per_image.csv``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from medrestore.evaluation.metrics import BEST_BY

#: The evaluation's row for the degraded test images: the floor every restoration must clear.
INPUT = "degraded"
#: How a failed model is marked in tables and figures.
FAILED = "failed: below its input"
#: Why a task gets no champion when none of its trained models converged and beats its input.
NO_CHAMPION = "no converged model beats the degraded input"


def failed_models(model_means: Mapping[str, float], input_mean: float | None) -> set[str]:
    """The trained models (name -> mean :data:`BEST_BY` on one test corruption) that score below the
    degraded input's mean; none when the input's score is unknown."""
    if input_mean is None or not np.isfinite(input_mean):
        return set()
    return {m for m, v in model_means.items() if v is not None and np.isfinite(v) and float(v) < float(input_mean)}


def below_input_in_summary(summary: dict, variant: str, metric: str = BEST_BY,
                           kinds: tuple[str, ...] = ("model", "baseline")) -> set[str]:
    """The methods of ``kinds`` (trained models and classical baselines) of one test corruption of an
    evaluation summary whose mean ``metric`` is below the degraded input's: none of them is ever called
    best there, whatever its kind (a baseline below its input, e.g. CLAHE on a cataract photograph in
    PSNR, did not restore it either)."""
    methods = summary.get("methods", {})
    entry = methods.get(INPUT, {}).get(variant, {}).get(metric)
    means = {m: v[variant][metric]["mean"] for m, v in methods.items()
             if v.get(variant, {}).get("kind") in kinds and metric in v[variant]}
    return failed_models(means, entry["mean"] if entry else None)


def failed_in_summary(summary: dict, variant: str, metric: str = BEST_BY) -> set[str]:
    """The failed trained models of one test corruption of an evaluation summary."""
    return below_input_in_summary(summary, variant, metric, kinds=("model",))


def failed_in_table(table: pd.DataFrame, variant: str, metric: str = BEST_BY) -> set[str]:
    """The failed trained models of one test corruption of a per-image table (means over its images,
    as the summary takes them)."""
    if metric not in table or "kind" not in table:
        return set()
    rows = table[table["variant"] == variant]
    means = {
        m: float(np.nanmean(v)) for m, v in rows.groupby("method")[metric] if np.isfinite(v.to_numpy(dtype=float)).any()
    }
    kinds = rows.groupby("method")["kind"].first()
    return failed_models({m: v for m, v in means.items() if kinds.get(m) == "model"}, means.get(INPUT))
