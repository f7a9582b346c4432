"""The lineage tags of medrestore.tracking.runs under a real ``dvc repro``: in a temporary git + DVC repository, two
stages that open their MLflow runs as the pipeline's stages do (``stage_run``, ``tag_outputs``, ``log_datasets``)
on a CHASE_DB1 photograph. What DVC records in dvc.lock is the reference for every tag."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import subprocess_env

REPO = Path(__file__).resolve().parents[1]

# stage "make": a folder output with a nested file (a directory md5 in dvc.lock) and a file output
MAKE = """
import pathlib, shutil, sys
from medrestore.tracking.runs import stage_run, tag_outputs
with stage_run(None, {"n": 1}) as t:
    out = pathlib.Path("out"); (out / "sub").mkdir(parents=True, exist_ok=True)
    shutil.copy("photo.jpg", out / "sub" / "Image_11L.jpg"); (out / "manifest.json").write_text('{"images": 1}')
    pathlib.Path("note.txt").write_text("made\\n")
    tag_outputs(t, [out, pathlib.Path("note.txt")])
assert not t.failures, t.failures
"""
# stage "use": reads the folder (an MLflow dataset input), writes one file
USE = """
import hashlib, pathlib
from medrestore.tracking.runs import log_datasets, stage_run, tag_outputs
with stage_run(None, {}) as t:
    log_datasets(t, [pathlib.Path("out")], "train")
    data = (pathlib.Path("out") / "sub" / "Image_11L.jpg").read_bytes()
    pathlib.Path("used.txt").write_text(hashlib.sha256(data).hexdigest() + "\\n")
    tag_outputs(t, [pathlib.Path("used.txt")])
assert not t.failures, t.failures
"""


def _run(cwd: Path, *cmd: str) -> subprocess.CompletedProcess:
    env = {**subprocess_env(), "PYTHONPATH": str(REPO / "src")}
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def _runs(root: Path) -> list:
    from mlflow import MlflowClient

    from medrestore.tracking.runs import EXPERIMENT

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"], max_results=100)


def _lock_outs(root: Path) -> dict[str, dict[str, str]]:
    """stage -> output path -> md5, as dvc.lock records them now."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    return {stage: {o["path"]: o["md5"] for o in v["outs"]} for stage, v in lock.items()}


@pytest.fixture(scope="module")
def repo(tmp_path_factory, chase_dir):
    root = tmp_path_factory.mktemp("tracking-dvc")
    (root / "photo.jpg").write_bytes((chase_dir / "Image_01L.jpg").read_bytes())
    (root / "make.py").write_text(MAKE)
    (root / "use.py").write_text(USE)
    (root / "README.md").write_text("tiny\n")
    (root / "params.yaml").write_text("n: 1\n")
    (root / ".gitignore").write_text("mlflow.db\nmlruns/\n")
    _run(root, "git", "init", "-q")
    _run(root, sys.executable, "-m", "dvc", "init", "-q")
    _run(root, sys.executable, "-m", "dvc", "stage", "add", "-q", "-n", "make", "-d", "make.py", "-d", "photo.jpg",
         "-o", "out", "-o", "note.txt", f"{sys.executable} make.py")
    _run(root, sys.executable, "-m", "dvc", "stage", "add", "-q", "-n", "use", "-d", "use.py", "-d", "out",
         "-o", "used.txt", f"{sys.executable} use.py")
    _run(root, "git", "add", "-A")
    _run(root, "git", "commit", "-qm", "stages")
    _run(root, sys.executable, "-m", "dvc", "repro", "-q")
    first = _lock_outs(root)
    _run(root, "git", "add", "-A")
    _run(root, "git", "commit", "-qm", "lock")  # from here on dvc.lock is a tracked file, which DVC rewrites
    (root / "make.py").write_text(MAKE.replace('"images": 1', '"images": 2'))
    _run(root, "git", "commit", "-qam", "two images")
    # both stages run again; DVC rewrites dvc.lock after "make", before "use" starts
    _run(root, sys.executable, "-m", "dvc", "repro", "-q")
    assert _run(root, "git", "status", "--porcelain", "dvc.lock").stdout.strip() == "M dvc.lock"
    return root, [first, _lock_outs(root)]


def test_every_run_is_tagged_with_the_md5_dvc_records_for_each_output(repo):
    root, locks = repo
    runs = _runs(root)
    assert [r.data.tags["dvc_stage"] for r in runs] == ["make", "use", "make", "use"]
    for i, run in enumerate(runs):
        stage, outs = run.data.tags["dvc_stage"], locks[i // 2]
        for path, md5 in outs[stage].items():
            assert run.data.tags.get(f"out_md5:{path}") == md5, (stage, path)
    assert locks[0]["make"]["out"].endswith(".dir")  # a folder output: DVC's directory md5, not a file's
    assert locks[0]["make"]["out"] != locks[1]["make"]["out"]
    make = runs[0].data.tags
    assert {k for k in make if k.startswith("out_md5:")} == {"out_md5:out", "out_md5:out/manifest.json",
                                                             "out_md5:note.txt"}


def test_one_repro_id_per_dvc_repro(repo):
    runs = _runs(repo[0])
    ids = [r.data.tags.get("dvc_repro_id", "") for r in runs]
    assert all(len(i) == 16 for i in ids), ids
    assert ids[0] == ids[1] and ids[2] == ids[3] and ids[0] != ids[2], ids


def test_a_lock_rewritten_by_dvc_is_not_dirty_but_an_edited_file_is(repo, monkeypatch):
    root, _ = repo
    runs = _runs(root)
    # the second "use" ran with dvc.lock already rewritten for "make" (the fixture checks it is modified)
    assert all(r.data.tags["git_dirty"] == "false" for r in runs), [
        (r.data.tags["dvc_stage"], r.data.tags.get("git_dirty_paths")) for r in runs
    ]
    from medrestore.tracking.runs import git_commit, stage_tags

    assert git_commit(root) == (_run(root, "git", "rev-parse", "HEAD").stdout.strip(), False)
    (root / "README.md").write_text("edited\n")
    try:
        assert git_commit(root)[1] is True
        monkeypatch.chdir(root)
        monkeypatch.delenv("DVC_STAGE", raising=False)
        tags = stage_tags("make")
        assert tags["git_dirty"] == "true" and tags["git_dirty_paths"] == "README.md"
        assert tags["dvc_repro_id"] == ""  # not started by DVC
    finally:
        (root / "README.md").write_text("tiny\n")


def test_the_dataset_input_is_named_and_digested_as_dvc_records_it(repo):
    root, locks = repo
    outs = locks[-1]
    use = [r for r in _runs(root) if r.data.tags["dvc_stage"] == "use"][-1]
    (inp,) = use.inputs.dataset_inputs
    assert (inp.dataset.name, inp.dataset.digest) == ("out", outs["make"]["out"])
    assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "train"


def test_lineage_of_a_file_inside_a_folder_output_finds_the_run_that_wrote_it(repo):
    from medrestore.tracking.lineage import lineage

    root, _ = repo
    rec = lineage(root / "out" / "sub" / "Image_11L.jpg", root=root, uri=f"sqlite:///{root / 'mlflow.db'}")
    newest_make = [r for r in _runs(root) if r.data.tags["dvc_stage"] == "make"][-1]
    assert rec["mlflow"]["matched_by"] == "output md5 tag" and rec["mlflow"]["run_id"] == newest_make.info.run_id


def test_dirty_paths_leave_out_the_lock_and_outputs_dvc_rewrites():
    from medrestore.tracking.runs import dirty_paths

    porcelain = "\0".join([" M dvc.lock", " D reports/report.md", " M reports/plots/psnr.csv", "M  src/a.py",
                           "R  src/new.py", "src/old.py", " M sub/params.yaml", ""])
    outputs = {"reports/report.md", "reports/plots"}
    assert dirty_paths(porcelain, "", outputs) == ["src/a.py", "src/new.py", "sub/params.yaml"]
    # a DVC project in a sub-folder of the git repository: paths relative to it
    assert dirty_paths(" M sub/dvc.lock\0 M sub/params.yaml\0", "sub/", set()) == ["params.yaml"]


@pytest.mark.slow  # a pipeline copy run with DVC (about a minute on 2 cores)
def test_the_data_stages_of_the_pipeline_tag_what_dvc_records(tmp_path):
    """download, prepare, patchify and corrupt@TASK (the stages whose runs had no out_md5 tags) under `dvc repro`
    in a tiny copy of the repository: each run's tags are dvc.lock's outputs, one repro id for all."""
    from conftest import copy_checkout, shrink_params

    work = copy_checkout(tmp_path / "repo")
    for p in (work / ".dvc" / "cache", work / ".dvc" / "tmp"):
        subprocess.run(["rm", "-rf", str(p)], check=True)
    (work / "dvc.lock").unlink(missing_ok=True)
    (work / "data").mkdir(exist_ok=True)
    (work / "data" / ".keep").touch()  # as make repro does: data.dvc tracks the folder with this one empty file
    params = shrink_params(yaml.safe_load((work / "params.yaml").read_text()), sources=["sample"], stride=8,
                           tasks={"denoise-g25"})
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(work, "git", "init", "-q")
    _run(work, "git", "add", "-A")
    _run(work, "git", "commit", "-qm", "tiny")
    _run(work, sys.executable, "-m", "dvc", "repro", "-q", "corrupt@denoise-g25")
    outs = _lock_outs(work)
    runs = {r.data.tags["dvc_stage"]: r for r in _runs(work)}
    assert set(runs) == {"download", "prepare", "patchify", "corrupt@denoise-g25"} == set(outs)
    for stage, run in runs.items():
        for path, md5 in outs[stage].items():
            assert run.data.tags.get(f"out_md5:{path}") == md5, (stage, path)
        assert run.data.tags["git_dirty"] == "false", run.data.tags.get("git_dirty_paths")
    assert len({r.data.tags["dvc_repro_id"] for r in runs.values()}) == 1
    corrupt = {i.dataset.name: i.dataset.digest for i in runs["corrupt@denoise-g25"].inputs.dataset_inputs}
    assert corrupt == {"artifacts/patches": outs["patchify"]["artifacts/patches"],
                       "artifacts/prepared": outs["prepare"]["artifacts/prepared"]}
