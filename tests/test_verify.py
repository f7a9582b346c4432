"""medrestore verify: the published numbers against a rerun's, with the rerun's 95 % intervals."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest

from medrestore.evaluation.metrics import headline
from medrestore.experiments.verify import IDENTICAL, OUTSIDE, WITHIN, main, verify

REPO = Path(__file__).resolve().parents[1]


def _summary(metrics: dict, width: float) -> dict:
    """summary.json as the evaluation writes it: per method/variant/column a mean and a 95 % interval."""
    out = {}
    for method, variants in metrics.items():
        for variant, numbers in variants.items():
            stats = {}
            for metric, value in numbers.items():
                if metric in headline() and not isinstance(value, bool):
                    stats[headline()[metric][0]] = {"mean": value, "ci95": [value - width, value + width],
                                                    "n_images": 8, "n_subjects": 4}
            out.setdefault(method, {})[variant] = stats
    return {"methods": out, "variants": sorted({v for vs in metrics.values() for v in vs})}


@pytest.fixture()
def workspace(tmp_path):
    """A git workspace whose committed reports/metrics.json is the project's published one."""
    published = json.loads((REPO / "reports" / "metrics.json").read_text())
    (tmp_path / "reports").mkdir()
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "reports" / "metrics.json").write_text(json.dumps(published))
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "PATH": "/usr/bin:/bin"}
    for cmd in (["git", "init", "-q"], ["git", "add", "."], ["git", "commit", "-qm", "published"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, env=env)
    return tmp_path, published


def _rerun(root: Path, ours: dict, width: float = 0.5) -> None:
    (root / "reports" / "metrics.json").write_text(json.dumps(ours))
    for task, methods in ours.items():
        (root / "artifacts" / "eval" / task).mkdir(parents=True, exist_ok=True)
        (root / "artifacts" / "eval" / task / "summary.json").write_text(json.dumps(_summary(methods, width)))


def test_an_identical_rerun_is_identical_everywhere(workspace, capsys):
    root, published = workspace
    _rerun(root, published)
    rows, _ = verify(root)
    assert rows and all(r["verdict"] == IDENTICAL for r in rows)
    assert len(rows) == sum(len(n) for m in published.values() for v in m.values() for n in v.values())
    assert main(["--root", str(root)]) == 0
    assert "0 outside" in capsys.readouterr().out


def test_small_moves_are_within_large_ones_outside_and_changes_fail(workspace, capsys):
    root, published = workspace
    ours = copy.deepcopy(published)
    ours["denoise-g25"]["irunet"]["s25"]["psnr_fov"] += 0.2     # inside a +-0.5 dB interval
    ours["denoise-g25"]["cdae"]["s25"]["psnr_fov"] += 1.0       # the published value is outside this run's interval
    ours["denoise-g25"]["redae"]["s25"]["converged"] = not ours["denoise-g25"]["redae"]["s25"]["converged"]
    del ours["sr-x4"]["bicubic"]["x4"]["ssim"]
    _rerun(root, ours)
    rows, _ = verify(root)
    by = {(r["task"], r["method"], r["variant"], r["metric"]): r for r in rows}
    assert by[("denoise-g25", "irunet", "s25", "psnr_fov")]["verdict"] == WITHIN
    # the interval the report printed, over subjects
    assert by[("denoise-g25", "irunet", "s25", "psnr_fov")]["n_subjects"] == 4
    assert by[("denoise-g25", "cdae", "s25", "psnr_fov")]["verdict"] == OUTSIDE
    assert by[("denoise-g25", "redae", "s25", "converged")]["why"] == "convergence verdict changed"
    assert by[("sr-x4", "bicubic", "x4", "ssim")]["why"] == "missing in this run"
    assert sum(r["verdict"] != IDENTICAL for r in rows) == 4
    assert main(["--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "1 within their 95% interval, 3 outside" in out and "cdae" in out and "irunet" in out
    assert "over 8 images / 4 subjects" in out


def test_a_revision_without_the_report_is_a_clear_error(workspace):
    from medrestore.core.io import InputError

    root, published = workspace
    _rerun(root, published)
    with pytest.raises(InputError, match="--committed"):
        verify(root, committed="no-such-revision")


def test_the_command_line_runs_it(workspace, monkeypatch, capsys):
    from medrestore.cli import main as cli

    root, published = workspace
    _rerun(root, published)
    monkeypatch.chdir(root)
    assert cli(["verify"]) == 0
    assert "0 outside" in capsys.readouterr().out


def test_a_fresh_clone_where_nothing_ran_is_refused_not_identical(workspace, monkeypatch, capsys):
    from medrestore.cli import main as cli
    from medrestore.core.io import InputError

    root, published = workspace  # reports/metrics.json is the committed one, artifacts/eval is absent
    with pytest.raises(InputError, match="nothing to compare.*make repro"):
        verify(root)
    monkeypatch.chdir(root)
    assert cli(["verify"]) == 2
    err = capsys.readouterr().err
    assert "nothing to compare" in err and "summary.json" in err and "Fix:" in err
    # one task evaluated here, the others not: theirs are not confirmed by this checkout
    task = sorted(published)[0]
    _rerun(root, {task: published[task]})
    (root / "reports" / "metrics.json").write_text(json.dumps(published))
    rows, _ = verify(root)
    assert {r["verdict"] for r in rows if r["task"] == task} == {IDENTICAL}
    assert all(
        r["verdict"] == OUTSIDE and "not evaluated in this checkout" in r["why"] for r in rows if r["task"] != task
    )


@pytest.mark.parametrize("content,words", [(b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "not text"), (b"[1, 2]", "a JSON list"),
                                           (b'{"t": [1]}', "task 't'"), (b"{", "not valid JSON")])
def test_a_broken_metrics_json_here_or_committed_is_a_clear_error(workspace, monkeypatch, capsys, content, words):
    from medrestore.cli import main as cli

    root, published = workspace
    _rerun(root, published)
    monkeypatch.chdir(root)
    good = (root / "reports" / "metrics.json").read_bytes()
    (root / "reports" / "metrics.json").write_bytes(content)
    assert cli(["verify"]) == 2
    err = capsys.readouterr().err
    assert "reports/metrics.json" in err and words in err and "Fix:" in err
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "PATH": "/usr/bin:/bin"}
    subprocess.run(["git", "commit", "-qam", "broken"], cwd=root, check=True, env=env)
    (root / "reports" / "metrics.json").write_bytes(good)
    assert cli(["verify", "--committed", "HEAD"]) == 2
    err = capsys.readouterr().err
    assert "HEAD:reports/metrics.json" in err and words in err and "Fix:" in err


def test_this_checkouts_numbers_come_from_its_evaluation_not_the_committed_file(workspace):
    root, published = workspace
    ours = copy.deepcopy(published)
    ours["denoise-g25"]["cdae"]["s25"]["psnr_fov"] += 1.0
    _rerun(root, ours)  # an evaluation whose number moved ...
    # ... beside the committed report (not rebuilt)
    (root / "reports" / "metrics.json").write_text(json.dumps(published))
    rows, _ = verify(root)
    by = {(r["task"], r["method"], r["variant"], r["metric"]): r for r in rows}
    row = by[("denoise-g25", "cdae", "s25", "psnr_fov")]
    assert row["verdict"] == OUTSIDE and row["ours"] == pytest.approx(
        published["denoise-g25"]["cdae"]["s25"]["psnr_fov"] + 1.0
    )


def test_a_model_now_below_its_input_is_a_changed_failed_verdict(workspace):
    """``failed`` is recomputed from this run's summary (the gate's rule), not copied from the report."""
    root, published = workspace
    _rerun(root, copy.deepcopy(published))
    path = root / "artifacts" / "eval" / "denoise-g25" / "summary.json"
    summary = json.loads(path.read_text())
    for method, kind in (("degraded", "input"), ("redae", "model")):
        summary["methods"][method]["s25"]["kind"] = kind
    floor = summary["methods"]["degraded"]["s25"]["psnr_fov"]["mean"]
    summary["methods"]["redae"]["s25"]["psnr_fov"]["mean"] = floor - 1.0
    path.write_text(json.dumps(summary))
    by = {(r["task"], r["method"], r["variant"], r["metric"]): r for r in verify(root)[0]}
    assert published["denoise-g25"]["redae"]["s25"]["failed"] is False
    assert by[("denoise-g25", "redae", "s25", "failed")]["verdict"] == OUTSIDE
    assert by[("denoise-g25", "redae", "s25", "failed")]["why"] == "failed verdict changed"
    assert by[("denoise-g25", "cdae", "s25", "failed")]["verdict"] == IDENTICAL  # no kind in its summary: kept


def test_runs_trained_in_bf16_are_named_beside_the_verdicts(workspace, capsys):
    from medrestore.experiments.verify import bf16_methods, bf16_note

    root, published = workspace
    assert bf16_methods(root) == []  # no params.yaml: nothing named
    # the project's profile trains every run in 32-true: none named
    (root / "params.yaml").write_text((REPO / "params.yaml").read_text())
    assert bf16_methods(root) == []
    # REDAE switched to bf16-mixed in the standard profile: it alone is named
    line = ("        redae: {batch_size: 16, max_steps: 1000, val_every: 100, lr: 0.001, schedule: cosine, "
            "warmup_steps: 50}")
    text = (REPO / "params.yaml").read_text()
    assert line in text
    (root / "params.yaml").write_text(text.replace(line, line[:-1] + ", precision: bf16-mixed}"))
    bf16 = bf16_methods(root)
    assert "denoise-g25/redae" in bf16 and "denoise-g25/cdae" not in bf16 and "denoise-blind/dncnn-blind" not in bf16
    changed = copy.deepcopy(published)
    variants = changed["denoise-g25"]["redae"]
    metric = next(k for k, v in next(iter(variants.values())).items() if not isinstance(v, bool))
    next(iter(variants.values()))[metric] += 0.01
    _rerun(root, changed)
    assert main(["--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "trained in bf16-mixed (params.yaml): denoise-g25/redae;" in out
    assert main(["--root", str(root), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["bf16"] for r in rows if r["method"] == "redae"} == {True}
    assert not any(r["bf16"] for r in rows if r["method"] != "redae")
    assert bf16_note([{"task": "denoise-g25", "method": "cdae"}], bf16) == ""
