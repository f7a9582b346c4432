"""dvc.yaml's code dependencies match what each stage really imports (medrestore.pipeline.deps).

For every stage, the import closure of its script inside this project (``stages/*.py`` and
``src/medrestore`` modules, function-level imports included, with the ``__init__.py`` of every package
on the way) is derived from the source with ``ast``. The test fails when a file of that closure is not
covered by a dependency of the stage (a file, or a folder holding it), and when a code dependency
covers nothing the stage imports. A folder dependency may hold modules the stage does not import
(``src/medrestore/models`` for every model): the rule is that it covers at least one that it does.
``python -m medrestore.pipeline.deps --write`` fixes dvc.yaml.
"""

from __future__ import annotations

import shutil

import pytest

from medrestore.pipeline.deps import REPO, check, closure, code_deps, covers, script_of, stages, sync


@pytest.mark.parametrize("stage", sorted(stages()))
def test_stage_lists_exactly_the_code_it_imports(stage):
    missing, extra = check(stage, stages()[stage])
    assert not missing, (
        f"dvc.yaml stage {stage}: imports {missing} but does not list them in deps. Fix: python -m "
        "medrestore.pipeline.deps --write"
    )
    assert not extra, (
        f"dvc.yaml stage {stage}: lists {extra} but imports nothing from there. Fix: python -m "
        "medrestore.pipeline.deps --write"
    )


def test_the_closure_follows_function_level_imports_and_the_pipeline_layer():
    files = {f.relative_to(REPO).as_posix() for f in closure(REPO / "stages" / "report.py")}
    assert "src/medrestore/pipeline/report.py" in files  # the stage script only calls the pipeline module
    assert "src/medrestore/training/convergence.py" in files  # imported inside a function of the report
    assert "src/medrestore/__init__.py" in files


def test_an_import_added_without_its_dvc_yaml_entry_fails_and_write_fixes_it(tmp_path):
    """The drift the check exists for: a stage module imports one more library module."""
    for name in ("src", "stages", "dvc.yaml"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp_path / name)
    module = tmp_path / "src" / "medrestore" / "pipeline" / "prepare.py"
    module.write_text(
        module.read_text()
        + "\n\ndef _folding():\n    from medrestore.serving import bn_folding\n\n    return bn_folding\n"
    )
    spec = stages(tmp_path)["prepare"]
    missing, extra = check("prepare", spec, tmp_path)
    assert missing == ["src/medrestore/serving/__init__.py", "src/medrestore/serving/bn_folding.py"] and extra == []
    assert sync(tmp_path) == ["prepare"]
    assert check("prepare", stages(tmp_path)["prepare"], tmp_path) == ([], [])
    assert sync(tmp_path) == []  # in line: nothing to rewrite


def _closure_and_deps(stage: str) -> tuple[set[str], list[str]]:
    spec = stages()[stage]
    files = {f.relative_to(REPO).as_posix() for f in closure(REPO / script_of(spec))}
    return files, code_deps(spec)


ENGINE = ("engine", "paired", "gan", "chain", "callbacks", "data", "config", "losses", "segmenter")
DOWNLOAD = ("src/medrestore/data/fetch.py", "src/medrestore/data/sources.py", "src/medrestore/data/prepare.py")


def test_the_report_does_not_depend_on_the_training_engine():
    """The report reads the convergence verdict only: an engine change must not rerun it."""
    files, deps = _closure_and_deps("report")
    assert "src/medrestore/training/convergence.py" in files
    for name in ENGINE:
        path = f"src/medrestore/training/{name}.py"
        assert (REPO / path).is_file(), path  # the list above still names real modules
        assert path not in files, f"the report stage imports {path}"
        assert not any(covers(d, path) for d in deps), f"dvc.yaml's report stage depends on {path}"


@pytest.mark.parametrize("stage", ["evaluate", "evaluate_external", "report"])
def test_evaluation_and_report_do_not_depend_on_the_download_code(stage):
    """They read stored images by name (data/names.py), never the sources or their download."""
    files, deps = _closure_and_deps(stage)
    for path in DOWNLOAD:
        assert path not in files, f"the {stage} stage imports {path}"
        assert not any(covers(d, path) for d in deps), f"dvc.yaml's {stage} stage depends on {path}"
    if stage != "evaluate_external":  # it names no stored image
        assert "src/medrestore/data/names.py" in files


def test_only_the_face_and_the_command_sit_at_the_package_root():
    root = REPO / "src" / "medrestore"
    assert sorted(p.name for p in root.glob("*.py")) == ["__init__.py", "cli.py"]
    assert all((d / "__init__.py").is_file() for d in root.iterdir() if d.is_dir() and d.name != "__pycache__")
