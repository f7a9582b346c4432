"""The published report opened in a real browser (headless Chromium from Debian's package)."""

import os
from pathlib import Path

import pytest

from medrestore.report import browser_check, chromium_binary

REPO = Path(__file__).resolve().parents[1]

if chromium_binary() is None and not os.environ.get("CI"):
    pytest.skip("Chromium is not installed here (CI installs it: see .ci/run)", allow_module_level=True)


def test_every_image_loads_and_every_table_has_rows(tmp_path):
    result = browser_check(REPO / "reports" / "index.html", screenshot=tmp_path / "report.png")
    assert result["images"], "the report shows no figure"
    assert all(img["loaded"] and img["width"] > 100 for img in result["images"]), result["images"]
    assert result["tables"] and all(rows >= 3 for rows in result["tables"]), result["tables"]
    assert result["title"] == "medrestore report"
    png = (tmp_path / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000


def test_a_broken_image_is_detected(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<!doctype html><html><head><title>t</title></head><body><table><tbody><tr><td>1</td></tr></tbody></table>"
                    "<img alt='gone' src='missing.png'></body></html>")
    result = browser_check(page)
    assert result["images"] == [{"alt": "gone", "loaded": False, "width": 0}]
    assert result["tables"] == [1]
