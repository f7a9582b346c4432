"""``make bench``'s sections that run the pipeline itself: patchify and corrupt at scale (each in a
fresh process), ``dvc repro`` with nothing to do, and the whole default pipeline from nothing in a
fresh clone, its outputs compared with this checkout's ``dvc.lock``. Called by ``benchmarks/bench.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from medrestore.tracking.dvclock import lock_stages, output_md5s


# --------------------------------------------------------------------------- data stages
def bench_patchify(root: Path, size: int, stride: int, mirror: str) -> dict:
    """patchify and corrupt at 1x and 4x the CHASE_DB1 images: seconds, patches/s and peak RSS, each in
    a fresh process (``benchmarks/patchify_bench.py``)."""
    script = root / "benchmarks" / "patchify_bench.py"
    if not script.is_file():
        return {"skipped": f"{script} not found (run from the repository root)"}
    if not Path(mirror).is_dir():
        return {"skipped": f"{mirror}: no CHASE_DB1 mirror here"}
    cmd = [sys.executable, str(script), "--size", str(size), "--stride", str(stride), "--mirror", str(mirror)]
    res = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return {"failed": res.stderr[-2000:]}
    return json.loads(res.stdout[res.stdout.index("{") :])


# --------------------------------------------------------------------------- pipeline
def bench_dvc_noop(root: Path) -> dict:
    """``dvc repro`` when nothing changed (skipped when the pipeline is not up to date)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "--quiet"], cwd=root, env=env, capture_output=True,
                            text=True, check=False)
    if status.returncode != 0:
        return {"skipped": "the pipeline is not up to date here (run `make repro` first)"}
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=root, env=env, capture_output=True, text=True,
                         check=False)
    seconds = time.perf_counter() - t
    return {"seconds": round(seconds, 3), "goal_seconds": 10, "ran_nothing": "Running stage" not in res.stdout,
            "returncode": res.returncode}


def bench_repro(root: Path, shared: Path, targets: list[str] | None = None) -> dict:
    """The whole default pipeline from nothing: ``dvc repro`` in a fresh ``git clone`` of HEAD, with
    an empty DVC cache and its own MLflow store, ``shared`` beside it as ``../shared`` (the
    environment is this one: ``make repro``'s install step is not timed). Gives wall seconds per
    stage and in all, and compares every output's md5 with this checkout's ``dvc.lock``.
    ``targets``: only these stages (and what they depend on)."""
    import tempfile

    if not (root / "dvc.yaml").is_file() or not (root / ".git").exists():
        return {"skipped": f"{root} is not a git checkout of the pipeline"}
    if not shared.is_dir():
        return {"skipped": f"{shared}: no shared folder (CHASE_DB1 mirror, pyiqa assets) here"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                            check=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip())
    with tempfile.TemporaryDirectory(prefix="medrestore-bench-repro-") as tmp:
        (Path(tmp) / "shared").symlink_to(shared.resolve())
        clone = Path(tmp) / "medrestore"
        subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True, capture_output=True)
        (clone / "data").mkdir(exist_ok=True)  # as `make repro`: your own images' folder, empty
        stamps: list[tuple[str, float]] = []
        log: list[str] = []
        t0 = time.perf_counter()
        with subprocess.Popen([sys.executable, "-m", "dvc", "repro", *(targets or [])], cwd=clone, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
            for line in proc.stdout:
                log.append(line)
                if line.startswith("Running stage '"):
                    stamps.append((line.split("'")[1], time.perf_counter() - t0))
        total = time.perf_counter() - t0
        if proc.returncode != 0:
            return {"failed": "".join(log)[-3000:], "returncode": proc.returncode}
        compared = compare_locks(root / "dvc.lock", clone / "dvc.lock", {s for s, _ in stamps})
    return {
        "commit": commit,
        "checkout_had_uncommitted_changes": dirty,
        "seconds": round(total, 1),
        "stages": stage_seconds(stamps, total),
        "by_kind": _by_kind(stage_seconds(stamps, total)),
        **compared,
        "note": "fresh git clone, empty DVC cache, CHASE_DB1 from the shared mirror; per stage = from its "
                "'Running stage' line to the next (start-up and imports included)",
    }


def stage_seconds(stamps: list[tuple[str, float]], end: float) -> dict[str, float]:
    """Seconds of each stage from the times its 'Running stage' lines appeared (the last one ends at ``end``)."""
    ends = [t for _, t in stamps[1:]] + [end]
    return {name: round(stop - start, 1) for (name, start), stop in zip(stamps, ends)}


def _by_kind(stages: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, sec in stages.items():
        kind = name.split("@")[0]
        out[kind] = round(out.get(kind, 0.0) + sec, 1)
    return out


def compare_locks(ours: Path, theirs: Path, stages: set[str], timings: tuple[str, ...] = ("cost.json",)) -> dict:
    """Outputs of ``stages`` whose md5 in ``theirs`` differs from ``ours`` (both dvc.lock files).
    Outputs named in ``timings`` (the evaluate stage's measured seconds, kept out of DVC's cache)
    are listed apart: they are not meant to match."""
    a, b = (output_md5s(lock_stages(path, required=True), stages) for path in (ours, theirs))
    timed = sorted(k for k in b if k.endswith(timings))
    checked = [k for k in b if k not in timed]
    differing = sorted(k for k in checked if a.get(k) != b[k])
    return {"outputs_compared": len(checked), "outputs_identical": len(checked) - len(differing),
            "outputs_differing": differing,
            "timing_outputs": timed}
