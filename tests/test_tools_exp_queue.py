"""tools/exp_queue.py (make queue): DVC's queue run to the end, failed experiments queued again with
their own parameters, real failures reported with their logs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import subprocess_env, use_subprocess_env
from tools import exp_queue


def _sh(cmd: list[str], cwd: Path) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, f"{cmd}: {res.stdout[-2000:]} {res.stderr[-2000:]}"
    return res.stdout


@pytest.mark.parametrize("new", [
    {"train": {"lr": 0.003, "profile": "paper", "steps": 10}},                       # changed leaves
    {"train": {"lr": 0.001, "profile": "standard", "milestones": [0.5, 0.75]}},       # added list
    {"train": {"lr": 0.001}, "flag": True, "note": "a b: c's"},                        # removed + quoted text
    {"train": {"lr": 1e-05, "profile": "standard", "kw": {"skip": "bicubic", "n": None}}},
    {"train": {"lr": 0.001, "profile": "inf", "tag": "nan", "kind": "1e5"}},          # text that reads as a number
])
def test_overrides_turn_the_baseline_params_into_the_experiments_through_dvcs_own_parser(tmp_path, new):
    from dvc.utils.hydra import apply_overrides
    from dvc.utils.serialize import load_yaml

    old = {"train": {"lr": 0.001, "profile": "standard"}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(old))
    overrides = exp_queue.param_overrides(old, new)
    assert overrides
    apply_overrides(path, overrides)
    assert load_yaml(path) == new  # read as DVC reads it (YAML 1.2: DVC writes 1e-05 without a point)


@pytest.mark.slow
def test_failed_experiments_are_queued_again_and_a_real_failure_is_reported(tmp_path, monkeypatch, capsys):
    """Three queued experiments, two workers: one succeeds, one fails on its first attempt only (as an
    experiment DVC's queue drops), one fails every time (a broken stage). The first two end Success with
    their own parameters; the third is tried retries + 1 times, reported Failed with its log, exit 1."""
    work = tmp_path / "repo"
    marks = tmp_path / "marks"
    work.mkdir()
    marks.mkdir()
    (work / "params.yaml").write_text("lr: 0.1\n")
    (work / "train.py").write_text(
        "import json, sys, yaml\nfrom pathlib import Path\n"
        "lr = yaml.safe_load(open('params.yaml'))['lr']\n"
        f"marks = Path({str(marks)!r})\n"
        "(marks / f'{lr}-{len(list(marks.glob(f\"{lr}-*\")))}').touch()  # one mark per attempt\n"
        "if lr == 0.3:\n    sys.exit('lr 0.3: this stage always fails')\n"
        "if lr == 0.2 and len(list(marks.glob('0.2-*'))) == 1:\n    sys.exit('first attempt dropped')\n"
        "Path('out.json').write_text(json.dumps({'lr': lr}))\n")
    (work / "dvc.yaml").write_text(
        "stages:\n  train:\n    cmd: python train.py\n    deps: [train.py]\n    params: [lr]\n"
        "    metrics:\n      - out.json:\n          cache: false\n")
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "toy"]):
        _sh(cmd, work)
    for name, lr in (("ok", 0.1), ("flaky", 0.2), ("broken", 0.3)):
        _sh([sys.executable, "-m", "dvc", "exp", "run", "--queue", "-n", name, "-S", f"lr={lr}"], work)
    use_subprocess_env(monkeypatch)  # the runner starts DVC itself

    result = exp_queue.run(work, jobs=2, retries=1, server=False, poll=1.0, timeout=600)
    out = capsys.readouterr().out
    assert result["ok"] == {"status": "Success", "attempts": 1}, out
    assert result["flaky"] == {"status": "Success", "attempts": 2}, out
    assert result["broken"] == {"status": "Failed", "attempts": 2}, out
    assert result["unretried"] == {}
    assert "lr 0.3: this stage always fails" in out  # the failure's own log, printed
    assert sorted(p.name for p in marks.iterdir()) == ["0.1-0", "0.2-0", "0.2-1", "0.3-0", "0.3-1"]
    shown = json.loads(_sh([sys.executable, "-m", "dvc", "exp", "show", "--json"], work))
    got = {r["name"]: r["data"]["metrics"]["out.json"]["data"]["lr"]
           for rev in shown for exp in rev.get("experiments") or [] for r in exp.get("revs", [])
           if r.get("name") and "data" in ((r.get("data") or {}).get("metrics") or {}).get("out.json", {})}
    assert got == {"ok": 0.1, "flaky": 0.2}  # the retried experiment ran with its own parameter
    status = _sh([sys.executable, "-m", "dvc", "queue", "status"], work)
    assert "0 active" in status  # no worker left behind


def test_a_moved_head_is_not_queued_again_blindly(tmp_path):
    """When HEAD moved since an experiment was queued, re-queuing would run other code: refused, with the reason."""
    work = tmp_path / "repo"
    work.mkdir()
    (work / "params.yaml").write_text("lr: 0.1\n")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "one"]):
        _sh(cmd, work)
    base = _sh(["git", "rev-parse", "HEAD"], work).strip()
    (work / "params.yaml").write_text("lr: 0.2\n")
    _sh(["git", "commit", "-qam", "stash-like"], work)
    stash = _sh(["git", "rev-parse", "HEAD"], work).strip()
    (work / "code.py").write_text("x = 1\n")
    _sh(["git", "add", "code.py"], work)
    _sh(["git", "commit", "-qm", "moved on"], work)

    class Entry:
        name, baseline_rev, stash_rev = "exp-a", base, stash

    args, why = exp_queue.requeue_command(work, Entry)
    assert args[-2:] == ["-S", "lr=0.2"]
    assert why and "no longer its baseline" in why
