"""Peak memory and speed of the patchify and corrupt stages at 1x and 4x the images.

Builds a prepared folder from the CHASE_DB1 mirror (every image the mirror holds), and a 4x one
by repeating each prepared image under three more ids. Each measurement runs patchify in a fresh
subprocess, which reports its peak resident set size (``VmHWM`` of /proc/self/status, reset at
exec; ``ru_maxrss`` would carry over the parent's peak from before the exec), its peak of Python
allocations (``tracemalloc``) and the wall time; the import baseline is measured the same way
without patchify. The corrupt stage (patch-level Gaussian sigma 25, the default denoise-g25 task) is
measured the same way on each patchify output. Prints one JSON object.

    .venv/bin/python benchmarks/patchify_bench.py [--mirror ../shared/datasets] [--size 768]
        [--patch-size 40] [--stride 10] [--work /tmp/patchify-bench]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _peak_rss_mib() -> float:
    """This process's peak resident set size (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(args: argparse.Namespace) -> None:
    from medrestore.core.io import read_json
    from medrestore.data.patches import patchify

    result = {"baseline_rss_mib": _peak_rss_mib()}
    if args.stage == "corrupt":
        from medrestore.data.corrupt import corrupt_task

        spec = {"train": {"kind": "gaussian", "sigma": 25}, "test": {"s25": {"kind": "gaussian", "sigma": 25}}}
        out = Path(args.out)
        shutil.rmtree(out, ignore_errors=True)
        tracemalloc.start()
        t = time.perf_counter()
        summary = corrupt_task(Path(args.patches), out, task="bench-g25", spec=spec, seed=0,
                               prepared_dir=Path(args.prepared))
        seconds = time.perf_counter() - t
        _, py_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        patches = sum(int(v["count"]) for v in summary["splits"].values())
        result.update(patches=patches, seconds=round(seconds, 3),
                      patches_per_second=round(patches / seconds) if patches else None,
                      python_peak_mib=py_peak / 2**20)
        shutil.rmtree(out, ignore_errors=True)
    elif args.prepared:
        manifest = read_json(Path(args.prepared) / "manifest.json")
        out = Path(args.out)
        shutil.rmtree(out, ignore_errors=True)
        tracemalloc.start()
        t = time.perf_counter()
        summary = patchify(manifest, Path(args.prepared), out, seed=0, patch_size=args.patch_size, stride=args.stride,
                           min_fov_fraction=0.8, val_fraction=0.25, test_fraction=0.25, region_grid=2)
        seconds = time.perf_counter() - t
        _, py_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        patches = summary["counts"]["train"] + summary["counts"]["val"]
        result.update(images=len(manifest["images"]), patches=patches, seconds=round(seconds, 3),
                      patches_per_second=round(patches / seconds), python_peak_mib=py_peak / 2**20,
                      patch_bytes_mib=patches * args.patch_size**2 * 3 / 2**20)
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    result["peak_rss_mib"] = _peak_rss_mib()
    print(json.dumps(result))


def _measure(prepared: Path | None, out: Path, args: argparse.Namespace, *, stage: str = "patchify",
             patches: Path | None = None,
             keep: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", "--patch-size", str(args.patch_size), "--stride", str(args.stride),
           "--out", str(out), "--stage", stage]
    if prepared is not None:
        cmd += ["--prepared", str(prepared)]
    if patches is not None:
        cmd += ["--patches", str(patches)]
    if keep:
        cmd.append("--keep")
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _build(args: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    from medrestore.core.io import write_json_atomic
    from medrestore.data.names import safe_name
    from medrestore.data.prepare import prepare_sources
    from medrestore.data.sources import gather

    sources = work / "sources"
    records = gather(["chase_db1"], sources, mirror=Path(args.mirror), folder=work, cache_dir=work / "cache",
                     allow_network=False)
    manifest = {"images": [r.as_dict(sources) for r in records]}
    one = work / "prepared_1x"
    prepared = prepare_sources(manifest, sources, one, size=args.size, mode="border_centre", fov_threshold=0.1)
    four = work / "prepared_4x"
    entries = []
    for copy in range(4):
        for e in prepared["images"]:
            new = dict(e, id=e["id"] if copy == 0 else f"{e['id']}_copy{copy}")
            for key in ("image", "fov", "vessels", "vessels_2nd"):
                if e.get(key):
                    rel = f"{key}/{safe_name(new['id'])}.png"
                    (four / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(one / e[key], four / rel)
                    new[key] = rel
            entries.append(new)
    write_json_atomic(four / "manifest.json", dict(prepared, images=entries))
    return one, four


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mirror", default=str(REPO.parent / "shared" / "datasets"))
    ap.add_argument("--size", type=int, default=768)
    ap.add_argument("--patch-size", type=int, default=40)
    ap.add_argument("--stride", type=int, default=10)
    ap.add_argument("--work", default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--prepared", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--stage", default="patchify", help=argparse.SUPPRESS)
    ap.add_argument("--patches", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args)
        return
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="patchify-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    one, four = _build(args, work)
    build_s = time.perf_counter() - t
    report = {
        "params": {"size": args.size, "patch_size": args.patch_size, "stride": args.stride},
        "build_seconds": round(build_s, 1),
        "imports_only": _measure(None, work / "patches", args),
        "x1": _measure(one, work / "patches_x1", args, keep=True),
        "x4": _measure(four, work / "patches_x4", args, keep=True),
    }
    report["corrupt_x1"] = _measure(one, work / "corrupt", args, stage="corrupt", patches=work / "patches_x1")
    report["corrupt_x4"] = _measure(four, work / "corrupt", args, stage="corrupt", patches=work / "patches_x4")
    report["peak_rss_growth_x4_over_x1_mib"] = round(report["x4"]["peak_rss_mib"] - report["x1"]["peak_rss_mib"], 1)
    report["corrupt_peak_rss_growth_x4_over_x1_mib"] = round(
        report["corrupt_x4"]["peak_rss_mib"] - report["corrupt_x1"]["peak_rss_mib"], 1
    )
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
