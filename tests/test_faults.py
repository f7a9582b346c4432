"""Faults reproduced for real: stages killed with SIGKILL mid-way, tampered checkpoints, parallel experiments.

The pipeline runs in a temporary copy of the repository with tiny params (one task, one model,
a few training steps), through ``dvc`` as a user runs it. A kill takes the whole process group
(``dvc`` and the stage it started) at a moment the stage is seen writing its output.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import copy_checkout, cut_patches, noisy_copies, shrink_params, subprocess_env, use_subprocess_env

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TASK, MODEL = "denoise-g25", "redae"
RUN = f"{TASK}-{MODEL}"


# --------------------------------------------------------------------------- a tiny pipeline copy
def tiny_params(p: dict) -> dict:
    """One task, one model, four training steps; every other stage at its smallest useful size."""
    shrink_params(p, sources=["sample"], stride=8, tasks={TASK})
    t = p["train"]
    t["runs"] = {RUN: {"task": TASK, "model": MODEL}}
    t["chains"] = {}
    t["finetune"] = {}
    t["vessel"] = {}
    steps = {"max_steps": 4, "val_every": 2, "ckpt_every": 2, "batch_size": 8}
    layers = [t["defaults"], t["models"][MODEL]]
    profile = t.get("profiles", {}).get(t.get("profile"), {})
    layers += [profile.get("defaults", {}), profile.get("models", {}).get(MODEL, {})]
    for layer in layers:
        for key in ("epochs", "pretrain_epochs"):
            layer.pop(key, None)
        layer.update(steps)
    for layer in layers[2:]:  # the profile's rate would shadow the recipe's, which the experiments below vary
        layer.pop("lr", None)
    if "segmenter" in p:
        p["segmenter"]["steps"] = 4
    e = p["evaluate"]
    e["baselines"] = {TASK: ["median"]}
    e["assets"] = str(SHARED / "assets" / "pyiqa")
    return p


def sh(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=timeout,
                         check=False)
    if check:
        assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}"
    return res


def dvc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return sh([sys.executable, "-m", "dvc", *args], cwd, check=check)


def make_repo(dest: Path) -> Path:
    if not (SHARED / "assets" / "pyiqa").is_dir():
        pytest.skip(f"{SHARED} not present on this machine")
    copy_checkout(dest)
    shutil.rmtree(dest / ".dvc" / "cache", ignore_errors=True)
    shutil.rmtree(dest / ".dvc" / "tmp", ignore_errors=True)
    (dest / "dvc.lock").unlink(missing_ok=True)
    (dest / "data").mkdir(exist_ok=True)
    (dest / "data" / ".keep").touch()  # data.dvc: data/ holds one empty hidden file (DVC warns on an empty folder)
    params = tiny_params(yaml.safe_load((dest / "params.yaml").read_text()))
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["git", "init", "-q"], dest)
    sh(["git", "add", "-A"], dest)
    sh(["git", "commit", "-qm", "tiny"], dest)
    return dest


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    work = make_repo(tmp_path_factory.mktemp("faults") / "repo")
    dvc("repro", f"evaluate@{TASK}", cwd=work)
    return work


def tree_hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def set_param(work: Path, section: str, key: str, value) -> None:
    params = yaml.safe_load((work / "params.yaml").read_text())
    params[section][key] = value
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def kill_when_writing(work: Path, cmd: list[str], parent: Path, name: str, timeout: float = 300) -> str:
    """Run ``cmd``; SIGKILL it and its children once the stage's temporary output folder holds a file."""
    def temporaries() -> set[Path]:
        return set(parent.glob(f".{name}.*.tmp")) if parent.is_dir() else set()

    earlier = temporaries()  # leftovers of earlier kills are not a sign of this run writing
    proc = subprocess.Popen(cmd, cwd=work, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + timeout
    seen = None
    while time.time() < deadline and proc.poll() is None:
        for tmp in temporaries() - earlier:
            if any(p.is_file() for p in tmp.rglob("*")):
                seen = tmp
                break
        if seen:
            break
        time.sleep(0.01)
    alive = proc.poll() is None
    if alive:
        os.killpg(proc.pid, signal.SIGKILL)
    out = proc.communicate()[0].decode(errors="replace")
    assert seen is not None and alive, f"{cmd} ended before it could be killed while writing:\n{out[-3000:]}"
    assert proc.returncode == -signal.SIGKILL
    return out


def dvc_repro(stage: str) -> list[str]:
    return [sys.executable, "-m", "dvc", "repro", "-s", stage]


def stage_changed(work: Path, stage: str) -> bool:
    status = json.loads(dvc("status", "--json", stage, cwd=work).stdout or "{}")
    return stage in status


# --------------------------------------------------------------------------- interrupted stages
# `dvc repro` deletes a stage's outputs before running it (they stay in the DVC cache), so a stage
# killed under DVC leaves its output absent: DVC sees the stage as not run and the next stage
# cannot start. A stage script run by hand keeps its previous complete output (atomic_dir).
def _absent_or(out: Path, before: dict[str, str]) -> bool:
    return not out.exists() or tree_hashes(out) == before


@pytest.mark.slow  # a pipeline copy run with DVC
def test_patchify_killed_mid_write_leaves_nothing_partial_and_rerun_matches(repo):
    out = repo / "artifacts" / "patches"
    before = tree_hashes(out)
    assert not stage_changed(repo, "patchify")
    set_param(repo, "patchify", "stride", 4)  # new params: the stage must run again, writing ~4x the patches
    try:
        kill_when_writing(repo, dvc_repro("patchify"), repo / "artifacts", "patches")
        assert _absent_or(out, before)  # never a half-written folder where DVC or corrupt would read it
        assert stage_changed(repo, "patchify")
        assert any(repo.joinpath("artifacts").glob(".patches.*.tmp"))  # the killed writer's leftovers ...
        dvc("repro", "-s", "patchify", cwd=repo)
        assert not any(repo.joinpath("artifacts").glob(".patches.*"))  # ... are removed by the rerun
        after_kill = tree_hashes(out)
        assert after_kill != before
        dvc("repro", "-s", "--force", "patchify", cwd=repo)
        assert tree_hashes(out) == after_kill  # the interrupted-then-rerun output is the uninterrupted one
    finally:
        set_param(repo, "patchify", "stride", 8)
    dvc("repro", "-s", "patchify", cwd=repo)
    assert tree_hashes(out) == before
    assert not stage_changed(repo, "patchify")


@pytest.mark.slow  # a pipeline copy run with DVC
def test_stage_script_killed_by_hand_keeps_the_previous_complete_output(repo):
    out = repo / "artifacts" / "patches"
    before = tree_hashes(out)
    set_param(repo, "patchify", "stride", 4)
    try:
        kill_when_writing(repo, [sys.executable, "stages/patchify.py"], repo / "artifacts", "patches")
        assert tree_hashes(out) == before
    finally:
        set_param(repo, "patchify", "stride", 8)
    assert not stage_changed(repo, "patchify")


@pytest.mark.slow  # a pipeline copy run with DVC
def test_evaluate_killed_mid_write_leaves_nothing_partial_and_rerun_matches(repo):
    stage = f"evaluate@{TASK}"
    out = repo / "artifacts" / "eval" / TASK
    def cached() -> dict[str, str]:
        return {k: v for k, v in tree_hashes(out).items() if k != "cost.json"}  # cost.json: timings, not cached

    before = cached()
    assert before and not stage_changed(repo, stage)
    overlap = yaml.safe_load((repo / "params.yaml").read_text())["evaluate"]["overlap"]
    set_param(repo, "evaluate", "overlap", overlap // 2)
    try:
        kill_when_writing(repo, dvc_repro(stage), out.parent, TASK)
        assert cached() in ({}, before)  # DVC removed the outputs before the run; the kill left none of the new ones
        assert stage_changed(repo, stage)
        dvc("repro", "-s", stage, cwd=repo)
        assert not any(out.parent.glob(f".{TASK}.*"))
        after_kill = cached()
        dvc("repro", "-s", "--force", stage, cwd=repo)
        assert cached() == after_kill
    finally:
        set_param(repo, "evaluate", "overlap", overlap)


# --------------------------------------------------------------------------- pickle payloads in checkpoints
class _Payload:
    """Unpickling this calls ``open(marker, "w")``: a file appears if the loader runs pickled code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_model_folder_with_pickled_weights_is_refused(tmp_path):
    from medrestore.core.io import InputError
    from medrestore.models import build_model, load_model, save_model

    folder = tmp_path / "model"
    save_model(build_model(MODEL), folder, name=MODEL, kwargs={})
    marker = tmp_path / "pwned"
    # The classic attack: a torch.save'd (pickle) file under the safetensors name.
    torch.save({"state_dict": build_model(MODEL).state_dict(), "x": _Payload(marker)}, folder / "model.safetensors")
    with pytest.raises(InputError, match=r"model\.safetensors: cannot load weights.*Fix"):
        load_model(folder)
    with pytest.raises(InputError):
        load_model(folder / "model.safetensors")
    assert not marker.exists()
    # Control: the same bytes run the payload when unpickled without restriction.
    torch.load(io.BytesIO((folder / "model.safetensors").read_bytes()), weights_only=False)
    assert marker.exists()


@pytest.fixture(scope="module")
def tiny_pairs(retina):
    def cut(region):
        clean = cut_patches(region, 16, 16)
        return clean, noisy_copies(clean, 0)

    return cut(retina[500:564, 300:364]), cut(retina[800:864, 700:764])


def _tampered_resume(tmp_path, pairs):
    from medrestore.training.config import TrainConfig
    from medrestore.training.data import fingerprint
    from medrestore.training.engine import resolve_config

    cfg = TrainConfig(model=MODEL, max_steps=4, val_every=2, ckpt_every=2, batch_size=4, progress_bar=False, seed=1)
    (tc, tn), (vc, vn) = pairs
    run_dir = tmp_path / "ckpt" / fingerprint(resolve_config(cfg, (tc, tn), len(tc)), [tc, tn, vc, vn])
    run_dir.mkdir(parents=True)
    marker = tmp_path / "pwned"
    torch.save({"epoch": 0, "global_step": 2, "state_dict": {}, "x": _Payload(marker)}, run_dir / "last.ckpt")
    return cfg, marker, run_dir / "last.ckpt"


def test_tampered_training_checkpoint_does_not_run_its_payload(tmp_path, tiny_pairs, capsys):
    from medrestore.training.engine import train_model

    cfg, marker, _ = _tampered_resume(tmp_path, tiny_pairs)
    with pytest.raises(Exception) as info:
        train_model(cfg, tiny_pairs[0], tiny_pairs[1], tmp_path / "out", tmp_path / "ckpt")
    assert "resuming from" in capsys.readouterr().out  # the tampered file was the one picked up
    assert not marker.exists(), "the checkpoint's pickle payload ran"
    refused = info.value.__cause__ if isinstance(info.value.__cause__, pickle.UnpicklingError) else info.value
    assert isinstance(refused, pickle.UnpicklingError) or "weights_only" in str(refused), info.value
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_tampered_training_checkpoint_error_names_the_file_and_the_fix(tmp_path, tiny_pairs):
    from medrestore.core.io import InputError
    from medrestore.training.engine import train_model

    cfg, marker, ckpt = _tampered_resume(tmp_path, tiny_pairs)
    with pytest.raises(InputError, match=rf"{ckpt.name}.*Fix: delete"):
        train_model(cfg, tiny_pairs[0], tiny_pairs[1], tmp_path / "out", tmp_path / "ckpt")
    assert not marker.exists()


# --------------------------------------------------------------------------- concurrent experiments
EXPERIMENTS = {"exp-lr2": 0.002, "exp-lr3": 0.003, "exp-lr4": 0.004}  # none is the baseline lr: each must train
STAGES = {"download", "prepare", "patchify", f"corrupt@{TASK}", "train_segmenter", "train_scoring_segmenter",
          f"train@{RUN}",
          f"evaluate@{TASK}", f"evaluate_external@{TASK}", "report"}


@pytest.mark.slow
def test_three_queued_experiments_with_two_workers_run_every_stage_through_the_tracking_server(tmp_path, monkeypatch):
    """``dvc exp run --queue`` x3 from nothing (no stage has run), two workers (``dvc queue start -j 2``
    through ``make queue``'s runner, tools/exp_queue.py) with the repository's local MLflow server: every stage of every
    experiment runs
    (or is restored from DVC's run cache when a parallel experiment already ran it with the same
    inputs), report included, each executed stage logged once in MLflow and tagged with its experiment; each
    experiment's
    outputs are its own; shared paths in params.yaml are relative and resolve from the repository root
    (a queued stage runs in a copy under .dvc/tmp/exps); each experiment's best model gets its own alias
    (``exp-<name>``), never the published ``champion``."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from tools import exp_queue, mlflow_server

    work = make_repo(tmp_path / "repo")
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["download"]["mirror"] = os.path.relpath(SHARED / "datasets", work)  # e.g. ../../shared/datasets
    params["evaluate"]["assets"] = os.path.relpath(SHARED / "assets" / "pyiqa", work)
    assert params["train"]["models"][MODEL]["lr"] not in EXPERIMENTS.values()
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["git", "add", "-A"], work)
    sh(["git", "commit", "-qm", "relative shared paths"], work)
    for name, lr in EXPERIMENTS.items():
        dvc("exp", "run", "--queue", "-n", name, "-S", f"train.models.{MODEL}.lr={lr}", cwd=work)
    server = mlflow_server.start(work)
    try:
        # make queue's runner: it waits for the queue and queues again what DVC's own queue dropped (#10673)
        use_subprocess_env(monkeypatch)  # the runner starts DVC itself; the stages' `python` is this environment's
        result = exp_queue.run(work, jobs=2, retries=2, server=False, poll=5.0, timeout=1500)
        status = dvc("queue", "status", cwd=work).stdout
        log_of = {n: dvc("queue", "logs", n, cwd=work, check=False).stdout for n in EXPERIMENTS}
        logs = "".join(log_of.values())
        failed = {n: log for n, log in log_of.items() if result.get(n, {}).get("status") != "Success"}
        workers = "".join(f"\n===== {p.name} (tail)\n{p.read_text(errors='replace')[-4000:]}"
                          # DVC's own worker logs
                          for p in sorted((work / ".dvc" / "tmp" / "exps" / "celery").glob("*.out")))
        assert not failed, (
            f"{result}\n{status}" + "".join(f"\n===== {n} (tail)\n{log[-5000:]}" for n, log in failed.items()) + workers
        )
        retried = {n for n in EXPERIMENTS if result[n]["attempts"] > 1}
        assert "0 active" in status  # no worker left behind
        assert "were not logged" not in logs and "NOT tracked" not in logs, logs[-6000:]
        # each experiment ran its changed stages and ran or restored (DVC's run cache: the same stage
        # with the same inputs, already run by a parallel experiment) every other stage
        ran = {n: re.findall(r"Running stage '([^']+)'", log) for n, log in log_of.items()}
        restored = {n: re.findall(r"Stage '([^']+)' is cached", log) for n, log in log_of.items()}
        for name in EXPERIMENTS:
            assert set(ran[name]) | set(restored[name]) == STAGES, (name, ran[name], restored[name])
            assert {f"train@{RUN}", f"evaluate@{TASK}", "report"} <= set(ran[name]), (name, ran[name])
        assert set().union(*map(set, ran.values())) == STAGES  # every stage executed somewhere
        shown = json.loads(dvc("exp", "show", "--json", cwd=work).stdout)
        metrics: dict[str, dict] = {}
        for rev in shown:
            for exp in rev.get("experiments") or []:
                for r in exp.get("revs", []):
                    if r.get("name") in EXPERIMENTS:
                        data = r["data"]
                        # reports/metrics.json is a plain output (git-tracked): read at the experiment's commit
                        shown_file = subprocess.run(["git", "show", f"{r['rev']}:reports/metrics.json"], cwd=work,
                                                    capture_output=True, text=True, check=True)
                        metrics[r["name"]] = json.loads(shown_file.stdout)
                        assert set(data["metrics"]) == {"reports/headline.json"}
                        assert (
                            data["params"]["params.yaml"]["data"]["train"]["models"][MODEL]["lr"]
                            == EXPERIMENTS[r["name"]]
                        )
        assert set(metrics) == set(EXPERIMENTS)
        # each its own
        assert len({json.dumps(m[TASK][MODEL], sort_keys=True) for m in metrics.values()}) == len(EXPERIMENTS)
        # MLflow, through the server: every stage of every experiment, finished, tagged with its experiment
        # not mlflow.set_tracking_uri: it exports MLFLOW_TRACKING_URI to later tests
        client = MlflowClient(tracking_uri=server["uri"])
        exp = client.get_experiment_by_name("medrestore")
        assert ".dvc/tmp" not in exp.artifact_location
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        by_exp: dict[str, list[str]] = {}
        for run in runs:
            assert run.info.status == "FINISHED", (run.info.run_name, run.info.status)
            by_exp.setdefault(run.data.tags.get("dvc_exp_name", ""), []).append(run.info.run_name)
        for name in EXPERIMENTS:  # one finished run per executed stage, nothing lost, nothing twice
            # an attempt DVC dropped may have logged stages the next one restored from the run cache
            if name in retried:
                assert set(ran[name]) <= set(by_exp.get(name, [])) <= STAGES, (name, by_exp.get(name), ran[name])
            else:
                assert sorted(by_exp.get(name, [])) == sorted(ran[name]), (name, by_exp.get(name), ran[name])
        trained = [r for r in runs if r.info.run_name == f"train@{RUN}"]
        assert all(r.data.tags.get("model_uri") for r in trained)
        # each experiment's report points its own alias at its model where that converged and beats its input
        # (the sanity gates: four steps rarely do), never at another's; none moves the published champion
        qualifies = {
            n: all(v.get("converged") and not v.get("failed") for v in metrics[n][TASK][MODEL].values())
            for n in EXPERIMENTS
        }
        for name in EXPERIMENTS:
            if qualifies[name]:
                version = client.get_model_version_by_alias(f"medrestore-{TASK}", f"exp-{name}")
                assert version.tags["train_run_id"] in {
                    r.info.run_id for r in trained if r.data.tags["dvc_exp_name"] == name
                }
            else:
                with pytest.raises(MlflowException):
                    client.get_model_version_by_alias(f"medrestore-{TASK}", f"exp-{name}")
        with pytest.raises(MlflowException):
            client.get_model_version_by_alias(f"medrestore-{TASK}", "champion")
        # one per qualifying model
        assert len(client.search_model_versions(f"name='medrestore-{TASK}'")) == sum(qualifies.values())
    finally:
        dvc("queue", "stop", "--kill", cwd=work, check=False)
        mlflow_server.stop(work)


STOPPABLE = """
import sys, time
from medrestore.core.io import atomic_dir
from medrestore.pipeline.stage import execute
from medrestore.tracking.runs import stage_run

def main(argv):
    with stage_run("prepare", {"size": 1}) as tracker, atomic_dir("artifacts/prepared") as tmp:
        (tmp / "part.bin").write_bytes(bytes(4096))
        print("RUN", tracker.run_id, flush=True)
        time.sleep(120)

execute(main)
"""


def test_a_stage_stopped_by_hand_removes_its_temporary_and_ends_its_run_as_killed(tmp_path):
    from mlflow import MlflowClient

    import medrestore

    (tmp_path / "stage.py").write_text(STOPPABLE)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**subprocess_env(), "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(Path(medrestore.__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "stage.py"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("RUN "), proc.communicate()[1][-2000:]
    assert list((tmp_path / "artifacts").glob(".prepared.*.tmp"))  # writing
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in err and "dvc checkout" in err and "Traceback" not in err
    assert list((tmp_path / "artifacts").iterdir()) == []  # no hidden .prepared.<pid>.*.tmp left
    assert MlflowClient(tracking_uri=uri).get_run(line.split()[1]).info.status == "KILLED"
