"""The published comparison: ``reports/report.md``, a self-contained ``reports/index.html``,
``reports/headline.json`` (the metrics ``dvc metrics show`` reads), ``reports/metrics.json`` (every
number, per method), ``reports/claims.json`` and the figures.

One concern per module:

- :mod:`~medrestore.report.build`        :func:`build_report`, the whole report from the evaluation's outputs
- :mod:`~medrestore.report.policy`       convergence verdicts and which method may be called best
- :mod:`~medrestore.report.tables`       the tables as rows of strings, and ``metrics.json``'s numbers
- :mod:`~medrestore.report.headline`     ``headline.json``: the best PSNR per task and test corruption
- :mod:`~medrestore.report.text`         the prose: methods paragraph, vessel segmenter, convergence rule
- :mod:`~medrestore.report.figures`      the figures (PNG bytes) and their captions
- :mod:`~medrestore.report.performance`  the performance section, rendered from ``reports/bench.json``
- :mod:`~medrestore.report.markup`       Markdown and HTML tables, the HTML page
- :mod:`~medrestore.report.browser`      the page checked in headless Chromium
"""

from medrestore.report.browser import browser_check, chromium_binary
from medrestore.report.build import build_report
from medrestore.report.figures import (
    CAPTIONS,
    cost_figure,
    crops_figure,
    curves_figure,
    error_maps_figure,
    sigma_csv,
    sigma_figure,
    vessel_figure,
)
from medrestore.report.performance import performance_section, sections
from medrestore.report.policy import (
    NOT_CONVERGED,
    banner,
    best_by,
    best_models,
    best_on_vessels,
    eligible,
    label,
    task_convergence,
)
from medrestore.report.tables import (
    KIND_ORDER,
    best_rows,
    convergence_rows,
    cost_rows,
    headline_numbers,
    lineage_rows,
    paired_rows,
    table_metrics,
    task_table,
)
from medrestore.report.text import (
    CONVERGENCE_TEXT,
    methods_paragraph,
    segmenter_section,
)

__all__ = [
    "CAPTIONS",
    "CONVERGENCE_TEXT",
    "KIND_ORDER",
    "NOT_CONVERGED",
    "banner",
    "best_by",
    "best_models",
    "best_on_vessels",
    "best_rows",
    "browser_check",
    "build_report",
    "chromium_binary",
    "convergence_rows",
    "cost_figure",
    "cost_rows",
    "crops_figure",
    "curves_figure",
    "eligible",
    "error_maps_figure",
    "headline_numbers",
    "label",
    "lineage_rows",
    "methods_paragraph",
    "paired_rows",
    "performance_section",
    "sections",
    "segmenter_section",
    "sigma_csv",
    "sigma_figure",
    "table_metrics",
    "task_convergence",
    "task_table",
    "vessel_figure",
]
