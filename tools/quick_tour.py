"""The quick tour: every stage of the pipeline from nothing, in a copy of this checkout, at a size
that runs in minutes on a laptop CPU (train.profile quick, 256 px images, a short segmenter).

    .venv/bin/python tools/quick_tour.py [--dest quick-tour]     (or: make quick)

The copy (``--dest``, git-ignored) gets its own git repository, DVC cache and MLflow database, so the
tour never touches this checkout's params, outputs or lock; its report is ``DEST/reports/index.html``
and says in its first line that its models are undertrained. Prints the wall time of the whole run and
of each stage.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

#: params changed for the tour (dotted keys); everything else is params.yaml's
TOUR = {
    "train.profile": "quick",
    "prepare.size": 256,
    "patchify.patch_size": 32,
    "patchify.stride": 16,
    "segmenter.steps": 60,
    "segmenter.patch": 48,
}


def copy_checkout(dest: Path) -> None:
    """The working tree as git sees it: tracked files and new files git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)


def tour_params(params: dict) -> dict:
    for dotted, value in TOUR.items():
        *path, last = dotted.split(".")
        node = params
        for key in path:
            node = node[key]
        node[last] = value
    # paths relative to this checkout (../shared/...) must still point there from the copy
    for section, key in (("download", "mirror"), ("evaluate", "assets")):
        value = params[section].get(key)
        if isinstance(value, str) and not os.path.isabs(value):
            params[section][key] = str((REPO / value).resolve())
    return params


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", type=Path, default=REPO / "quick-tour")
    args = ap.parse_args(argv)
    dest = args.dest.resolve()
    if dest.exists():
        print(f"{dest} exists: remove it first (rm -r {dest}) to run the tour from nothing.", file=sys.stderr)
        return 2
    dest.mkdir(parents=True)
    copy_checkout(dest)
    (dest / "data").mkdir(exist_ok=True)
    (dest / "data" / ".keep").touch()  # data.dvc: data/ holds one empty hidden file (DVC warns on an empty folder)
    for stale in ("dvc.lock",):
        (dest / stale).unlink(missing_ok=True)
    params = tour_params(yaml.safe_load((dest / "params.yaml").read_text()))
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    git = ["git", "-c", "user.name=medrestore", "-c", "user.email=tour@localhost"]
    subprocess.run([*git, "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "quick tour"], cwd=dest, check=True)
    start = time.perf_counter()
    stages: list[tuple[str, float]] = []
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=dest, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    current, since = None, start
    for line in proc.stdout:
        sys.stdout.write(line)
        m = re.match(r"Running stage '([^']+)'", line)
        if m:
            now = time.perf_counter()
            if current:
                stages.append((current, now - since))
            current, since = m.group(1), now
    rc = proc.wait()
    end = time.perf_counter()
    if current:
        stages.append((current, end - since))
    print(f"\nquick tour: dvc repro exit {rc}, {end - start:.0f} s wall; per stage (start to the next stage's start):")
    for name, seconds in stages:
        print(f"  {name:45s} {seconds:7.1f} s")
    if rc == 0:
        print(f"report: {dest / 'reports' / 'index.html'} (and report.md)")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
