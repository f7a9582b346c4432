"""Where every stage reads and writes, relative to the repository root: the one table that the
pipeline modules, dvc.yaml's ``outs`` (checked by tests/test_pipeline_paths.py) and the tests share."""

from __future__ import annotations

from pathlib import Path

ARTIFACTS = Path("artifacts")
SOURCES = ARTIFACTS / "sources"          # download
PREPARED = ARTIFACTS / "prepared"        # prepare
PATCHES = ARTIFACTS / "patches"          # patchify
CORRUPT = ARTIFACTS / "corrupt"          # corrupt@TASK: CORRUPT / TASK
MODELS = ARTIFACTS / "models"            # train@RUN, finetune@RUN, train_chain@RUN: MODELS / TASK / METHOD
SEGMENTER = ARTIFACTS / "segmenter"      # train_segmenter (the loss's and the report's vessel segmenter)
# train_segmenter scoring: the independent vessel segmenter (indep_ scores)
SCORING_SEGMENTER = ARTIFACTS / "segmenter_scoring"
EVAL = ARTIFACTS / "eval"                # evaluate@TASK: EVAL / TASK
EXTERNAL = ARTIFACTS / "evaluate_external"  # evaluate_external@TASK: EXTERNAL / TASK (other cameras' photographs)
REPORTS = Path("reports")                # report
VESSEL_SWEEP = REPORTS / "vessel_sweep.json"  # medrestore sweep (git-tracked): the report's vessel-term weight sweep
TRAIN_CACHE = Path(".cache") / "train"   # resumable checkpoints (not a DVC output): TRAIN_CACHE / RUN


def corrupt_dir(task: str) -> Path:
    return CORRUPT / task


def model_dir(task: str, method: str) -> Path:
    return MODELS / task / method


def eval_dir(task: str) -> Path:
    return EVAL / task


def external_dir(task: str) -> Path:
    return EXTERNAL / task
