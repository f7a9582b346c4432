"""The pipeline's paths are given once (medrestore.pipeline.paths) and dvc.yaml's outputs agree with them."""

from __future__ import annotations

import re

import yaml

from medrestore.pipeline import paths
from medrestore.pipeline.deps import REPO, stages

OUTPUT_ROOTS = {
    "download": paths.SOURCES, "prepare": paths.PREPARED, "patchify": paths.PATCHES, "corrupt": paths.CORRUPT,
    "train": paths.MODELS, "finetune": paths.MODELS, "train_chain": paths.MODELS, "train_vessel": paths.MODELS,
    "train_segmenter": paths.SEGMENTER, "train_scoring_segmenter": paths.SCORING_SEGMENTER,
    "evaluate": paths.EVAL, "evaluate_external": paths.EXTERNAL, "report": paths.REPORTS,
}


def _outputs(spec: dict) -> list[str]:
    found = []
    for key in ("outs", "metrics", "plots"):
        for item in spec.get(key, []):
            found.append(item if isinstance(item, str) else next(iter(item)))
    return found


def test_every_stage_writes_under_its_own_path_of_the_table():
    specs = stages()
    assert set(specs) == set(OUTPUT_ROOTS), "a new stage: add its output path to medrestore.pipeline.paths and here"
    for name, spec in specs.items():
        root = OUTPUT_ROOTS[name].as_posix()
        outs = _outputs(spec)
        assert outs, name
        for out in outs:
            assert out == root or out.startswith(root + "/"), f"dvc.yaml stage {name} writes {out}, outside {root}"


def test_per_task_and_per_model_folders_match_dvc_yaml():
    specs = stages()
    assert f"{paths.corrupt_dir('${key}').as_posix()}" in _outputs(specs["corrupt"])
    assert any(o.startswith(paths.eval_dir("${key}").as_posix() + "/") for o in _outputs(specs["evaluate"]))
    assert any(
        o.startswith(paths.external_dir("${item}").as_posix() + "/") for o in _outputs(specs["evaluate_external"])
    )
    model = paths.model_dir("${item.task}", "${item.model}").as_posix()
    assert any(o.startswith(model + "/") for o in _outputs(specs["train"]))


def test_stage_scripts_only_call_the_pipeline_layer():
    for script in sorted((REPO / "stages").glob("*.py")):
        text = script.read_text()
        imports = re.findall(r"^(?:from|import) (\S+)", text, flags=re.M)
        assert all(m.startswith("medrestore.pipeline") for m in imports), f"{script.name}: {imports}"
        assert len(text.splitlines()) <= 30, script.name
    raw = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    scripts = {re.search(r"stages/(\S+)\.py", (s.get("do") or s)["cmd"]).group(1) for s in raw.values()}
    assert scripts == {p.stem for p in (REPO / "stages").glob("*.py")}
