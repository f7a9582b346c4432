"""The browser check itself (the published report is opened in Chromium by tests/test_pipeline_e2e.py)."""

import os

import pytest

from medrestore.report.browser import browser_check, chromium_binary

if chromium_binary() is None and not os.environ.get("CI"):
    pytest.skip("Chromium is not installed here (CI installs it: see .ci/run)", allow_module_level=True)


def test_a_broken_image_is_detected(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text(
        "<!doctype "
        "html><html><head><title>t</title></head><body><table><tbody><tr><td>1</td></tr></tbody></table><img "
        "alt='gone' src='missing.png'></body></html>"
    )
    result = browser_check(page)
    assert result["images"] == [{"alt": "gone", "loaded": False, "width": 0}]
    assert result["tables"] == [{"head": 0, "body": 1}]  # no header row: the e2e test would refuse it
