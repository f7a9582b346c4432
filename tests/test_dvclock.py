"""The one reader of dvc.lock (lineage, the report's lineage tables and the benchmark read it through it)."""

import pytest
import yaml

from medrestore.core.io import InputError
from medrestore.tracking.dvclock import find_stage, lock_stages, output_md5s, read_lock

LOCK = {"schema": "2.0", "stages": {
    "patchify": {"cmd": "python stages/patchify.py", "outs": [{"path": "artifacts/patches", "md5": "d1.dir"}]},
    "train@r": {"cmd": "python stages/train.py r", "params": {"params.yaml": {"seed": 1}},
                "outs": [{"path": "artifacts/models/t/m/model.safetensors", "md5": "f1"},
                         {"path": "artifacts/models/t/m/curve.csv", "md5": "f2"}]},
}}


def test_a_missing_lock_is_empty_unless_required(tmp_path):
    assert read_lock(tmp_path / "dvc.lock") == {} and lock_stages(tmp_path / "dvc.lock") == {}
    with pytest.raises(InputError, match="dvc.lock: missing. Fix: run `dvc repro` first"):
        read_lock(tmp_path / "dvc.lock", required=True)
    (tmp_path / "dvc.lock").write_text("")
    assert lock_stages(tmp_path / "dvc.lock", required=True) == {}


def test_stages_and_the_stage_that_wrote_a_file(tmp_path):
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(LOCK))
    lock = read_lock(tmp_path / "dvc.lock")
    assert lock_stages(tmp_path / "dvc.lock") == LOCK["stages"]
    name, entry, out = find_stage(lock, "artifacts/patches/test/images/a.png")  # a file inside a folder output
    assert name == "patchify" and out["md5"] == "d1.dir" and entry["cmd"] == "python stages/patchify.py"
    assert find_stage(lock, "artifacts/models/t/m/curve.csv")[2]["md5"] == "f2"
    assert find_stage(lock, "artifacts/patchesX") is None  # a prefix of the name is not a folder
    assert output_md5s(lock["stages"], {"train@r", "absent"}) == {
        "train@r:artifacts/models/t/m/model.safetensors": "f1", "train@r:artifacts/models/t/m/curve.csv": "f2"}
