"""medrestore.experiments.sweep: the vessel-term weight sweep collected from real DVC experiments (a small
repository whose one stage writes reports/metrics.json, a plain output as in the pipeline)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medrestore.core.io import InputError
from medrestore.experiments.sweep import collect, write_sweep

VESSEL = {
    "t-m-vfeat": {"task": "t", "model": "m", "method": "m-vfeat", "base": "t-m",
                  "overrides": {"perceptual": {"backbone": "vessel", "weight": 0.001}}},
    "t-m-vprob": {"task": "t", "model": "m", "method": "m-vprob", "base": "t-m",
                  "overrides": {"perceptual": {"backbone": "vessel_prob", "thin_weight": 4.0, "weight": 0.001}}},
}
# the stage: each vessel-aware method's numbers as a function of its weight (PSNR falls, thin vessels rise)
SCRIPT = """
import json, os, yaml
p = yaml.safe_load(open("params.yaml"))
out = {"t": {}}
for key, e in p["train"]["vessel"].items():
    w = e["overrides"]["perceptual"]["weight"]
    out["t"][e["method"]] = {"s25": {"psnr_fov": round(34.0 - 100 * w, 4), "thin_kept_indep": round(0.01 + 10 * w, 4),
                                     "invented_indep": 0.3, "thin_kept": 0.02, "invented": 0.3, "converged": True}}
out["t"]["m"] = {"s25": {"psnr_fov": 34.0, "thin_kept_indep": 0.01}}
os.makedirs("reports", exist_ok=True)
json.dump(out, open("reports/metrics.json", "w"), indent=1, sort_keys=True)
"""


def _run(cmd, cwd):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert res.returncode == 0, f"{cmd}: {res.stdout}\n{res.stderr}"
    return res.stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweeprepo")
    dvc = str(Path(sys.executable).parent / "dvc")
    (root / "params.yaml").write_text(yaml.safe_dump({"train": {"runs": {"t-m": {"task": "t", "model": "m"}},
                                                                "vessel": VESSEL}}))
    (root / "stage.py").write_text(SCRIPT)
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"evaluate": {
        "cmd": f"{sys.executable} stage.py", "deps": ["stage.py"], "params": ["train"],
        "outs": [{"reports/metrics.json": {"cache": False}}]}}}))
    _run(["git", "init", "-q"], root)
    _run([dvc, "init", "-q"], root)
    _run([dvc, "config", "core.analytics", "false"], root)
    _run([dvc, "repro", "-q"], root)
    _run(["git", "add", "-A"], root)
    _run(["git", "commit", "-qm", "base"], root)
    for w in ("0.003", "0.01"):
        _run([dvc, "exp", "run", "-q", "-S", f"train.vessel.t-m-vprob.overrides.perceptual.weight={w}"], root)
    return root


def test_collects_one_point_per_weight_from_dvc_experiments(repo, monkeypatch):
    import dvc.api

    monkeypatch.chdir(repo)
    result = write_sweep(repo / "sweep.json", repo / "params.yaml", rows=dvc.api.exp_show(repo=str(repo)))
    assert json.loads((repo / "sweep.json").read_text()) == result
    prob = [p for p in result["points"] if p["run"] == "t-m-vprob"]
    assert [p["weight"] for p in prob] == [0.001, 0.003, 0.01]  # the workspace's and the two experiments'
    for p in prob:
        assert p["form"] == "vessel_prob" and p["method"] == "m-vprob" and p["variant"] == "s25"
        assert p["psnr_fov"] == pytest.approx(34.0 - 100 * p["weight"])
        assert p["indep_thin_recall_above_chance"] == pytest.approx(0.01 + 10 * p["weight"])
    feat = [p for p in result["points"] if p["run"] == "t-m-vfeat"]
    assert [p["weight"] for p in feat] == [0.001]  # no experiment changed it: one point, kept once


def test_unfinished_experiments_and_missing_numbers_give_no_point():
    rows = [{"Experiment": "a", "State": "Queued",
             "params.yaml:train.vessel.t-m-vprob.overrides.perceptual.weight": 0.5},
            {"Experiment": "b", "State": "Success",
             "params.yaml:train.vessel.t-m-vprob.overrides.perceptual.weight": 0.2,
             "metrics.json:t.m-vprob.s25.thin_kept_indep": 0.1},
            {"Experiment": "c", "State": "Success",
             "params.yaml:train.vessel.t-m-vprob.overrides.perceptual.weight": 0.3,
             "metrics.json:t.m-vprob.s25.psnr_fov": 33.0}]
    assert [(p["weight"], p["psnr_fov"]) for p in collect(rows, VESSEL)["points"]] == [(0.3, 33.0)]


def test_without_vessel_runs_there_is_nothing_to_collect(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"runs": {}}}))
    with pytest.raises(InputError, match="no train.vessel runs"):
        write_sweep(tmp_path / "out.json", tmp_path / "params.yaml", rows=[])
    assert not (tmp_path / "out.json").exists()


def test_merge_keeps_earlier_points_the_new_collection_does_not_replace(repo, monkeypatch):
    import dvc.api

    monkeypatch.chdir(repo)
    out = repo / "merged.json"
    earlier = {"run": "t-m-vfeat", "method": "m-vfeat", "form": "vessel", "weight": 0.0003, "task": "t",
               "variant": "s25", "psnr_fov": 33.5}
    stale = {**earlier, "run": "t-m-vprob", "method": "m-vprob", "form": "vessel_prob", "weight": 0.003,
             "psnr_fov": 1.0}
    out.write_text(json.dumps({"note": "", "points": [earlier, stale]}))
    result = write_sweep(out, repo / "params.yaml", rows=dvc.api.exp_show(repo=str(repo)), merge=True)
    got = {(p["run"], p["weight"]): p["psnr_fov"] for p in result["points"]}
    assert got[("t-m-vfeat", 0.0003)] == 33.5  # another clone's experiment, kept
    # re-collected: the new number replaces the old
    assert got[("t-m-vprob", 0.003)] == pytest.approx(34.0 - 100 * 0.003)
    assert len(got) == 5
    out.write_text("not json")
    with pytest.raises(InputError, match="not a sweep file"):
        write_sweep(out, repo / "params.yaml", rows=[], merge=True)
    assert out.read_text() == "not json"


def test_a_sweep_file_is_not_shrunk_without_replace(tmp_path, monkeypatch, capsys):
    from medrestore.cli import main

    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"train": {"runs": {"t-m": {"task": "t", "model": "m"}}, "vessel": VESSEL}})
    )
    rows = [{"Experiment": None, "State": "Success",
             "params.yaml:train.vessel.t-m-vprob.overrides.perceptual.weight": 0.001,
             "metrics.json:t.m-vprob.s25.psnr_fov": 33.9}]
    out = tmp_path / "sweep.json"
    committed = {"note": "", "points": [
        {"run": "t-m-vprob", "method": "m-vprob", "form": "vessel_prob", "weight": w, "task": "t", "variant": "s25",
         "psnr_fov": 30.0}
        for w in (0.001, 0.003, 0.01)]}
    out.write_text(json.dumps(committed))
    before = out.read_text()
    with pytest.raises(InputError, match=r"2 of its 3 points are not in this collection.*--merge.*--replace"):
        write_sweep(out, tmp_path / "params.yaml", rows=rows)
    assert out.read_text() == before
    assert [p["weight"] for p in write_sweep(out, tmp_path / "params.yaml", rows=rows,
                                             merge=True)["points"]] == [0.001, 0.003, 0.01]
    assert [p["weight"] for p in write_sweep(out, tmp_path / "params.yaml", rows=rows,
                                             replace=True)["points"]] == [0.001]
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "--params", str(tmp_path / "missing.yaml"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "missing.yaml: no such file" in err and "Fix:" in err


def test_an_unknown_revision_is_a_clear_error(repo, monkeypatch, capsys):
    from medrestore.cli import main

    monkeypatch.chdir(repo)
    assert main(["sweep", "--rev", "deadbeef", "--params", str(repo / "params.yaml"), "--out",
                 str(repo / "rev.json")]) == 2
    err = capsys.readouterr().err
    assert "--rev deadbeef" in err and "Fix:" in err
    assert not (repo / "rev.json").exists()


def test_the_sweep_records_its_test_images_and_never_merges_another_splits_points(tmp_path):
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"train": {"runs": {"t-m": {"task": "t", "model": "m"}}, "vessel": VESSEL}})
    )
    patches = tmp_path / "artifacts" / "patches" / "patches.json"
    patches.parent.mkdir(parents=True)
    patches.write_text(json.dumps({"splits": {"test": ["chase_db1/Image_11L", "chase_db1/Image_11R"]}}))
    rows = [{"Experiment": None, "State": "Success",
             "params.yaml:train.vessel.t-m-vprob.overrides.perceptual.weight": 0.001,
             "metrics.json:t.m-vprob.s25.psnr_fov": 33.9}]
    out = tmp_path / "sweep.json"
    old = {"note": "",
           "points": [{"run": "t-m-vprob", "method": "m-vprob", "form": "vessel_prob", "weight": 0.003, "task": "t",
                                   "variant": "s25", "psnr_fov": 30.0}]}  # an older file: no test images recorded
    out.write_text(json.dumps(old))
    with pytest.raises(InputError, match=r"scored on other test images.*Fix: pass --replace"):
        write_sweep(out, tmp_path / "params.yaml", rows=rows, merge=True)
    assert json.loads(out.read_text()) == old
    result = write_sweep(out, tmp_path / "params.yaml", rows=rows, replace=True)
    assert result["test_images"] == ["chase_db1/Image_11L", "chase_db1/Image_11R"] and len(result["points"]) == 1
    assert len(write_sweep(out, tmp_path / "params.yaml", rows=rows, merge=True)["points"]) == 1  # same split: merges
