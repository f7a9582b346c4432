"""The published page checked in a real browser: headless Chromium loads ``index.html`` and reports
which images loaded and how many rows each table has (``make screenshot`` also takes the README's
picture)."""

from __future__ import annotations

import html
import json
from pathlib import Path

from medrestore.core.io import write_bytes_atomic

_CHECK_SCRIPT = """<script>
window.addEventListener('load', () => {
  const images = [...document.images].map(i => ({alt: i.alt, loaded: i.complete && i.naturalWidth > 0,
                                                 width: i.naturalWidth}));
  const tables = [...document.querySelectorAll('table')].map(t => ({head: t.querySelectorAll('thead tr').length,
                                                                   body: t.querySelectorAll('tbody tr').length}));
  const pre = document.createElement('pre');
  pre.id = 'medrestore-check';
  pre.textContent = JSON.stringify({images, tables, title: document.title, h2: document.querySelectorAll('h2').length});
  document.body.appendChild(pre);
});
</script>"""


def chromium_binary() -> str | None:
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def browser_check(page: Path, screenshot: Path | None = None, width: int = 1200, height: int = 2400) -> dict:
    """Open ``page`` in headless Chromium: which images loaded, how many rows each table has, and
    optionally a screenshot. The page is checked as a copy with a small script appended, so the
    published file is never modified."""
    import subprocess
    import tempfile

    exe = chromium_binary()
    if exe is None:
        raise RuntimeError("no Chromium found. Fix: `apt-get install chromium` (Debian) and rerun.")
    page = Path(page).resolve()
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--allow-file-access-from-files"]
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.html"
        probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _CHECK_SCRIPT + "</body>"),
                         encoding="utf-8")
        res = subprocess.run([*flags, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()], capture_output=True,
                             text=True, timeout=120, check=False)
        start = res.stdout.find('<pre id="medrestore-check">')
        if start < 0:
            raise RuntimeError(f"Chromium did not run the page check (exit {res.returncode}): {res.stderr[-1500:]}")
        body = res.stdout[start + len('<pre id="medrestore-check">') : res.stdout.index("</pre>", start)]
        result = json.loads(html.unescape(body))
        if screenshot is not None:
            shot = Path(tmp) / "shot.png"
            subprocess.run([*flags, f"--window-size={width},{height}", f"--screenshot={shot}", page.as_uri()],
                           capture_output=True, text=True, timeout=120, check=True)
            write_bytes_atomic(screenshot, shot.read_bytes())
            result["screenshot"] = str(screenshot)
    return result
