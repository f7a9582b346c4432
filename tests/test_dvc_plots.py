"""`dvc plots show` on the committed sigma curves: one line per method (the by_method template)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_sigma_curves_draw_one_line_per_method(tmp_path):
    csvs = sorted((REPO / "reports" / "plots").glob("*_sigma.csv"))
    if not csvs:
        pytest.skip("no sigma curves in reports/plots (run the pipeline)")
    methods = {line.split(",")[0] for line in csvs[0].read_text().splitlines()[1:]}
    dvc = str(Path(sys.executable).parent / "dvc")
    subprocess.run([dvc, "plots", "show", "-q", "-o", str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    page = (tmp_path / "index.html").read_text()
    specs = [json.loads(m) for m in re.findall(r"var spec = (\{.*\});\s*$", page, flags=re.M)]
    sigma = [s for s in specs if "_sigma.csv" in json.dumps(s.get("title"))]
    assert sigma, "the sigma plot is rendered"
    spec = sigma[0]
    assert spec["encoding"]["color"]["field"] == "method" and spec["encoding"]["x"]["field"] == "sigma"
    assert {row["method"] for row in spec["data"]["values"]} == methods
