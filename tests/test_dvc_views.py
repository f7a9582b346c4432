"""DVC's own views of the pipeline fit a terminal: `dvc metrics show` and the headline `dvc exp show`
(`make exp-show`) rendered by DVC on a small repository holding the committed report numbers and the
real params.yaml; dvc.yaml declares reports/headline.json as its only metrics and one top-level
chart per task, drawn by `dvc plots show` with one line per model."""

from __future__ import annotations

import copy
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medrestore.core.io import load_yaml
from medrestore.pipeline.views import (
    EXP_COLUMNS,
    TEMPLATE,
    keep_pattern,
    plot_id,
    plots_block,
    task_curves,
    trained_methods,
)
from medrestore.report.headline import best_psnr_fov

REPO = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).parent / "dvc")
WIDTH = 200  # characters: a terminal's width


def _run(cmd, cwd, env=None):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t",
           "COLUMNS": "400", **(env or {})}
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert res.returncode == 0, f"{cmd}: {res.stdout}\n{res.stderr}"
    return res.stdout


def _dvc_yaml() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())


def _params() -> dict:
    return load_yaml((REPO / "params.yaml").read_text())


def _leaves(d):
    for v in d.values():
        yield from (_leaves(v) if isinstance(v, dict) else [v])


def test_the_headline_is_the_only_declared_metrics_file_and_holds_numbers_only():
    declared, stage_plots = [], []
    for raw in _dvc_yaml()["stages"].values():
        spec = raw.get("do") or raw
        declared += [m if isinstance(m, str) else next(iter(m)) for m in spec.get("metrics", [])]
        stage_plots += [p if isinstance(p, str) else next(iter(p)) for p in spec.get("plots", [])]
    assert declared == ["reports/headline.json"]
    assert stage_plots == ["reports/plots"]  # the models' curves are drawn per task by the top-level plots
    committed = json.loads((REPO / "reports" / "headline.json").read_text())
    values = list(_leaves(committed))
    assert values and all(isinstance(v, float) and math.isfinite(v) for v in values)
    # the report stage's function of the committed per-method numbers: the file is what a rerun writes
    assert committed == best_psnr_fov(json.loads((REPO / "reports" / "metrics.json").read_text()))
    assert set(committed) == set(_params()["corrupt"]["tasks"])


def test_the_headline_is_the_best_psnr_of_a_converged_model_a_baseline_or_the_input():
    metrics = json.loads((REPO / "reports" / "metrics.json").read_text())
    task, variant = "denoise-g25", "s25"
    scores = {m: v[variant]["psnr_fov"] for m, v in metrics[task].items() if "psnr_fov" in v.get(variant, {})}
    top = max(scores, key=scores.get)
    assert best_psnr_fov(metrics)[task][variant] == round(scores[top], 4)
    unconverged = copy.deepcopy(metrics)
    unconverged[task][top][variant]["converged"] = False  # not converged: its number is no headline
    rest = {m: s for m, s in scores.items() if m != top and metrics[task][m][variant].get("converged") is not False}
    assert best_psnr_fov(unconverged)[task][variant] == round(max(rest.values()), 4) < round(scores[top], 4)
    only_input = {task: {"degraded": metrics[task]["degraded"], "clean": metrics[task]["clean"]}}
    assert best_psnr_fov(only_input) == {task: {variant: round(metrics[task]["degraded"][variant]["psnr_fov"], 4)}}


@pytest.fixture(scope="module")
def views_repo(tmp_path_factory):
    """A DVC repository with the real params.yaml whose one stage writes the committed reports/metrics.json
    (a plain output) and reports/headline.json (its metrics), as the report stage declares them."""
    root = tmp_path_factory.mktemp("viewsrepo")
    (root / "reports").mkdir()
    (root / "params.yaml").write_text((REPO / "params.yaml").read_text())
    for name in ("metrics.json", "headline.json"):
        (root / name).write_text((REPO / "reports" / name).read_text())
    script = "import shutil\nfor n in ('metrics.json', 'headline.json'):\n    shutil.copy(n, 'reports/' + n)\n"
    (root / "stage.py").write_text(script)
    report = next(
        s for s in _dvc_yaml()["stages"].values() if "reports/headline.json" in json.dumps(s.get("metrics", []))
    )
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"report": {
        "cmd": f"{sys.executable} stage.py", "deps": ["stage.py", "metrics.json", "headline.json"],
        "params": ["seed", "train"],
        "outs": [o for o in report["outs"] if "reports/metrics.json" in json.dumps(o)],
        "metrics": report["metrics"]}}}))
    _run(["git", "init", "-q"], root)
    _run([DVC, "init", "-q"], root)
    _run([DVC, "config", "core.analytics", "false"], root)
    _run([DVC, "repro", "-q"], root)
    _run(["git", "add", "-A"], root)
    _run(["git", "commit", "-qm", "base"], root)
    return root


def _width(text: str) -> int:
    return max(len(line.rstrip()) for line in text.splitlines() if line.strip())


def test_dvc_metrics_show_fits_a_terminal(views_repo):
    shown = _run([DVC, "metrics", "show"], views_repo)
    assert _width(shown) <= WIDTH, shown
    header = shown.splitlines()[0].split()
    headline = json.loads((REPO / "reports" / "headline.json").read_text())
    assert header == ["Path"] + [f"{t}.{v}" for t in sorted(headline) for v in sorted(headline[t])]
    # every per-method number is still one command away, and far wider than a terminal
    assert _width(_run([DVC, "metrics", "show", "reports/metrics.json"], views_repo)) > 5 * WIDTH


def test_the_headline_exp_show_fits_a_terminal(views_repo):
    tasks = _params()["corrupt"]["tasks"]
    full = _run([DVC, "exp", "show", "--no-pager", "--csv"], views_repo).splitlines()[0].split(",")
    assert len(full) > 100  # every parameter of params.yaml: the reason for the narrowed view
    keep = _run([sys.executable, "-m", "medrestore.pipeline.views", "--keep"], views_repo,
                {"PYTHONPATH": str(REPO / "src")}).strip()
    assert keep == keep_pattern(tasks)
    narrow = _run([DVC, "exp", "show", "--no-pager", "--drop", ".*", "--keep", keep], views_repo)
    assert _width(narrow) <= WIDTH, narrow
    columns = _run([DVC, "exp", "show", "--no-pager", "--csv", "--drop", ".*", "--keep", keep],
                   views_repo).splitlines()[0].split(",")
    headline = json.loads((REPO / "reports" / "headline.json").read_text())
    assert columns[0] == "Experiment" and set(columns) - set(EXP_COLUMNS) == {
        f"{t}.{v}" for t in headline for v in headline[t]
    }
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^exp-show:.*\n\t.*dvc exp show --drop '\.\*' --keep .*medrestore\.pipeline\.views --keep",
                     makefile, flags=re.M)


def test_one_chart_per_task_lists_every_trained_model_of_it():
    params = _params()
    plots = [next(iter(p.items())) for p in _dvc_yaml()["plots"]]
    assert [pid for pid, _ in plots] == [plot_id(t) for t in sorted(params["corrupt"]["tasks"])]
    methods = trained_methods(params["train"])
    for task, (_, spec) in zip(sorted(params["corrupt"]["tasks"]), plots):
        assert spec["x"] == "step" and spec["template"] == TEMPLATE
        assert spec["y"] == {f"artifacts/models/{task}/{m}/curve.csv": "val_psnr" for m in methods[task]}
    # chains, vessel runs
    assert "denoise-g25/dncnn-srgan" in json.dumps(plots) and "denoise-g25/cdae-vprob" in json.dumps(plots)
    text = (REPO / "dvc.yaml").read_text()
    assert text[text.index("\nplots:\n") + 1:] == plots_block(params), "python -m medrestore.pipeline.views --write"


def test_dvc_plots_show_draws_each_tasks_models_in_one_chart(tmp_path):
    """The real dvc.yaml and template; each model's curve.csv as the engine writes it (validation PSNR on
    some steps only)."""
    _run(["git", "init", "-q"], tmp_path)
    _run([DVC, "init", "-q"], tmp_path)
    for name in ("dvc.yaml", "params.yaml", f".dvc/plots/{TEMPLATE}.json"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text((REPO / name).read_text())
    curves = task_curves(_params())
    for files in curves.values():
        for i, f in enumerate(files):
            (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / f).write_text("step,train_loss,lr,val_loss,val_psnr\n1,0.05,0.001,,\n10,0.02,0.001,0.02,"
                                      f"{20 + i}\n20,0.01,0.001,,\n30,0.01,0.001,0.01,{21 + i}\n")
    shown = json.loads(_run([DVC, "plots", "show", "--json"], tmp_path))["data"]
    for task, files in curves.items():
        (chart,) = shown[plot_id(task)]
        spec = chart["content"]
        assert spec["encoding"]["color"]["field"] == "filename" and spec["encoding"]["x"]["field"] == "step"
        drawn = {r.get("filename") for r in spec["data"]["values"] if r["val_psnr"] != ""}  # no filename: a single file
        assert len(drawn) == len(files)  # one line per model
    assert len([k for k in shown if k.endswith("validation PSNR")]) == len(curves)
