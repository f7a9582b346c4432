"""``reports/headline.json``: the one file dvc.yaml declares as metrics, so that ``dvc metrics show``,
``dvc metrics diff`` and ``dvc exp show`` fit a terminal.

Per task and test corruption (``task.variant``, one column each in DVC's views): the best PSNR inside
the field of view (dB) among the degraded input, the task's baselines and its converged trained
models, read from ``reports/metrics.json`` (every number of the report, per method: a plain output
that ``dvc metrics show reports/metrics.json`` still prints on request). Numbers only: which method
reached it is in the report's "Best methods" table.

``make exp-show`` narrows ``dvc exp show`` to these columns (:mod:`medrestore.pipeline.views`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: The metric of reports/metrics.json the headline keeps.
HEADLINE_METRIC = "psnr_fov"


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def best_psnr_fov(metrics: Mapping[str, Mapping[str, Mapping[str, Mapping[str, Any]]]]) -> dict[str, dict[str, float]]:
    """task -> test variant -> the highest ``psnr_fov`` of ``metrics`` (reports/metrics.json: task ->
    method -> variant -> metric) among methods that are not marked ``converged: false`` (the degraded
    input and the baselines carry no such mark). Tasks and variants without a PSNR are left out."""
    out: dict[str, dict[str, float]] = {}
    for task in sorted(metrics):
        best: dict[str, float] = {}
        for variants in metrics[task].values():
            for variant, numbers in (variants or {}).items():
                value = (numbers or {}).get(HEADLINE_METRIC)
                if not _number(value) or (numbers or {}).get("converged") is False:
                    continue
                best[variant] = max(best.get(variant, -math.inf), round(float(value), 4))
        if best:
            out[task] = dict(sorted(best.items()))
    return out
