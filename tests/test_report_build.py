"""build_report (medrestore.report.build) on a small synthetic evaluation: every output is written,
the lineage comes from dvc.lock, the performance section from bench.json, and the library report
does not depend on the benchmark harness."""

import json
import subprocess
import sys

import numpy as np
import yaml

from medrestore.core.io import write_json_atomic, write_png_atomic
from medrestore.report.build import build_report


def _m(v: float) -> dict:
    return {"mean": v, "ci95": [v - 0.1, v + 0.1]}


def _workspace(root, retina):
    clean = retina[400:464, 400:464]
    write_png_atomic(root / "patches/test/images/a.png", clean)
    write_png_atomic(root / "patches/test/fov/a.png", np.full(clean.shape[:2], 255, np.uint8))
    write_json_atomic(root / "patches/patches.json",
                      {"test": [{"id": "ds/a", "image": "test/images/a.png", "fov": "test/fov/a.png"}]})
    rng = np.random.default_rng(0)
    summary = {"variants": ["s15", "s25"], "methods": {}, "paired_tests": {},
               "cost": {"methods": {"dncnn": {"kind": "model", "parameters": 1000, "flops_per_mpix": 2e9},
                                    "median": {"kind": "baseline", "parameters": 0}}}}
    for method, kind, psnr in (("degraded", "input", 20.0), ("median", "baseline", 25.0), ("dncnn", "model", 27.0)):
        for variant in summary["variants"]:
            noisy = np.clip(clean + rng.normal(0, 10, clean.shape), 0, 255).astype(np.uint8)
            write_png_atomic(root / f"eval/t/restored/{method}/{variant}/ds__a.png", noisy)
            summary["methods"].setdefault(method,
                                          {})[variant] = {"kind": kind, "n": 1, "psnr": _m(psnr),
                                                          "psnr_fov": _m(psnr + 1),
                                                                 "ssim": _m(0.7), "ref_thin_recall": _m(0.3)}
    write_json_atomic(root / "eval/t/summary.json", summary)
    model = root / "models/t/dncnn"
    model.mkdir(parents=True)
    (model / "curve.csv").write_text(
        "step,train_loss,lr,val_loss,val_psnr\n"
        + "".join(f"{10 * i},0.1,0.001,0.1,{25.0 + 0.01 * i}\n" for i in range(1, 9))
    )
    write_json_atomic(model / "metrics.json", {"steps": 80, "best_val_psnr": 25.08})
    lock = {"stages": {"train@r": {"params": {"params.yaml": {"seed": 1}},
                                   "outs": [{"path": (model / "model.safetensors").as_posix(),
                                             "md5": "abcdef0123456789"}]}}}
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    (root / "bench.json").write_text(json.dumps({"mode": "quick", "machine": {"cpu_count": 2},
                                                 "baselines": {"image_size": 64, "seconds_per_mpix": {"median": 0.5}}}))
    params = {"seed": 1, "download": {"sources": ["chase_db1"]}, "prepare": {"mode": "border", "size": 64},
              "patchify": {"region_grid": 2, "val_fraction": 0.25, "test_fraction": 0.25, "patch_size": 40,
                           "stride": 20, "min_fov_fraction": 0.8},
              "corrupt": {"tasks": {"t": {"train": {"kind": "gaussian", "sigma": 25}, "test": {"s15": {}, "s25": {}}}}},
              "train": {"profile": "standard", "runs": {"r": {"task": "t", "model": "dncnn"}}}}
    return params


def test_the_report_is_written_whole(tmp_path, retina):
    params = _workspace(tmp_path, retina)
    headline = build_report(params, ["t"], tmp_path / "eval", tmp_path / "patches", tmp_path / "models",
                            tmp_path / "out",
                            lock_path=tmp_path / "dvc.lock", bench_path=tmp_path / "bench.json")
    out = tmp_path / "out"
    for name in ("index.html", "report.md", "metrics.json", "claims.json", "plots/t_sigma.csv", "figures/t_crops.png",
                 "figures/t_sigma.png",
                 "figures/t_cost.png", "figures/t_curves.png"):
        assert (out / name).is_file(), name
    md = (out / "report.md").read_text()
    assert "| dncnn | train@r | abcdef0123 |" in md  # the model's md5 as dvc.lock records it
    assert "## Performance" in md and "| median | 0.5 |" in md
    assert headline["t"]["dncnn"]["s25"] == {"psnr": 27.0, "psnr_fov": 28.0, "ssim": 0.7, "converged": True,
                                             "failed": False}
    assert "failed" not in headline["t"]["median"]["s25"]  # a verdict on trained models only
    assert json.loads((out / "metrics.json").read_text()) == headline
    # the declared DVC metrics: the best PSNR inside the FOV per test corruption (numbers only)
    best = {
        var: max(v[var]["psnr_fov"] for v in headline["t"].values() if "psnr_fov" in v.get(var, {}))
        for var in ("s15", "s25")
    }
    assert json.loads((out / "headline.json").read_text()) == {"t": best}
    page = (out / "index.html").read_text()
    assert page.startswith("<!doctype html>") and page.count("<img ") == 6 and "<h2 id='performance'>" in page
    # the same inputs give the same bytes
    build_report(params, ["t"], tmp_path / "eval", tmp_path / "patches", tmp_path / "models", tmp_path / "again",
                 lock_path=tmp_path / "dvc.lock", bench_path=tmp_path / "bench.json")
    for name in ("index.html", "report.md", "metrics.json", "headline.json", "claims.json"):
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes(), name


def test_the_report_does_not_import_the_benchmark_harness():
    code = "import sys, medrestore.report; print(sorted(m for m in sys.modules if m.split('.')[0] == 'benchmarks'))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"


def test_the_best_methods_section_names_each_champion_or_why_there_is_none(tmp_path, retina):
    params = _workspace(tmp_path, retina)
    kw = {"lock_path": tmp_path / "dvc.lock"}
    build_report(params, ["t"], tmp_path / "eval", tmp_path / "patches", tmp_path / "models", tmp_path / "out", **kw)
    assert "Champion of each task (the registry's alias): t: dncnn." in (tmp_path / "out" / "report.md").read_text()
    summary = json.loads((tmp_path / "eval/t/summary.json").read_text())
    summary["methods"]["dncnn"]["s25"]["psnr_fov"] = _m(20.5)  # below the degraded input's 21.0 on one test corruption
    write_json_atomic(tmp_path / "eval/t/summary.json", summary)
    build_report(params, ["t"], tmp_path / "eval", tmp_path / "patches", tmp_path / "models", tmp_path / "failed", **kw)
    md = (tmp_path / "failed" / "report.md").read_text()
    best = md[md.index("## Best methods"):md.index("## Vessel segmenter")]
    assert "t: no champion: no converged model beats the degraded input." in best
    assert "| t [s25] | median (26.00 dB) |" in best and "| t [s15] | dncnn (28.00 dB) |" in best
    assert "| dncnn (failed: below its input) | model |" in md and "| dncnn | model |" in md  # s25 marked, s15 not
    metrics = json.loads((tmp_path / "failed" / "metrics.json").read_text())
    assert metrics["t"]["dncnn"]["s25"]["failed"] is True and metrics["t"]["dncnn"]["s15"]["failed"] is False


def test_the_methods_say_which_split_the_test_images_come_from():
    from pathlib import Path

    from medrestore.report.text import split_sentence

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    assert params["patchify"]["split"] == "standard"
    standard = split_sentence(params)
    assert "published test subjects" in standard and "11L-14R" in standard and f"seed {params['seed']}" in standard
    params["patchify"]["split"] = "random"
    drawn = split_sentence(params)
    assert "11L-14R" not in drawn and f"test {params['patchify']['test_fraction']} of the subjects drawn" in drawn


def _png_chunks(data: bytes) -> list[bytes]:
    import struct

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunks.append(kind)
        pos += 12 + length
    return chunks


def test_every_image_of_report_md_is_a_small_file_git_tracks(tmp_path, retina):
    """report.md shows its figures where git is read: every image link is a small PNG under a report
    output that DVC leaves to git (`cache: false`) and that no .gitignore hides; the full-size figures
    (DVC-cached, ignored) are only inline in index.html. Rebuilt, the small copies are byte-identical."""
    import re
    from io import BytesIO
    from pathlib import Path

    import pytest
    from PIL import Image

    repo = Path(__file__).resolve().parents[1]
    if not (repo / ".git").exists():
        pytest.skip("not a git checkout")
    params = _workspace(tmp_path, retina)
    kw = {"lock_path": tmp_path / "dvc.lock", "bench_path": tmp_path / "bench.json"}
    build_report(params, ["t"], tmp_path / "eval", tmp_path / "patches", tmp_path / "models", tmp_path / "out", **kw)
    out = tmp_path / "out"
    links = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", (out / "report.md").read_text())
    assert len(links) == 6, links  # crops, errors, vessels, sigma, cost, curves of task t
    outs = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["report"]["outs"]
    git_outs = [next(iter(o)) for o in outs if isinstance(o, dict) and next(iter(o.values())).get("cache") is False]
    for link in links:
        path = f"reports/{link}"
        data = (out / link).read_bytes()
        assert any(path == o or path.startswith(o.rstrip("/") + "/") for o in git_outs), (
            f"{path}: not under a cache: false output of the report stage"
        )
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=repo).returncode
        assert ignored == 1, f"{path} is gitignored: a git host would not have it"
        full = (out / "figures" / Path(link).name).read_bytes()
        with Image.open(BytesIO(data)) as small, Image.open(BytesIO(full)) as big:
            assert small.mode == "P" and small.width == min(big.width, 1000) and len(data) < len(full)
        assert not {b"tIME", b"tEXt", b"iTXt", b"zTXt"} & set(_png_chunks(data)), link  # no timestamp, no software name
    # the full-size figures are what the report stage leaves to DVC: ignored by git, so never linked from report.md
    assert subprocess.run(["git", "check-ignore", "-q", "reports/figures/t_crops.png"], cwd=repo).returncode == 0
    build_report(params, ["t"], tmp_path / "eval", tmp_path / "patches", tmp_path / "models", tmp_path / "again", **kw)
    for link in links:
        assert (tmp_path / "again" / link).read_bytes() == (out / link).read_bytes(), link


def test_a_wide_figure_gets_a_small_palette_copy(retina):
    """A figure wider than a page column (a row of CHASE-sized crops) is scaled to 1000 px, in at most
    128 colours, and its PNG is the same bytes each time."""
    from io import BytesIO

    import matplotlib.pyplot as plt
    from PIL import Image

    from medrestore.report.figures import _fig_png, small_png

    fig, axes = plt.subplots(1, 6, figsize=(18, 3))
    for i, ax in enumerate(axes):
        ax.imshow(retina[100 + 40 * i : 356 + 40 * i, 200:456])
        ax.set_title(f"window {i}")
    full = _fig_png(fig)
    small = small_png(full)
    with Image.open(BytesIO(full)) as big, Image.open(BytesIO(small)) as im:
        assert big.width > 1000 and im.width == 1000 and abs(im.height - big.height * 1000 / big.width) <= 1
        assert im.mode == "P" and len(im.getcolors(256)) <= 128
        assert np.abs(np.asarray(im.convert("RGB").resize(big.size),
                                 np.float32) - np.asarray(big.convert("RGB"), np.float32)).mean() < 12
    assert small_png(full) == small and len(small) < len(full)
