"""params.yaml's schema and the merge of a run's settings (medrestore.core.params)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medrestore.core.io import InputError
from medrestore.core.params import deep_merge, run_entry, train_settings, validate_params
from medrestore.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_the_repository_params_pass_and_come_back_unchanged(params):
    before = copy.deepcopy(params)
    assert validate_params(params) == before


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda p: p["train"]["models"]["dncnn"].update(lr_rate=0.1), "train.models.dncnn.lr_rate: unknown key"),
        (lambda p: p["train"]["profiles"]["standard"]["models"]["cdae"].update(max_step=10),
         "train.profiles.standard.models.cdae.max_step: unknown key"),
        (lambda p: p["train"]["runs"]["denoise-g25-cdae"].update(modle="cdae"),
         "train.runs.denoise-g25-cdae.modle: unknown key"),
        (lambda p: p["patchify"].update(patchsize=40), "patchify.patchsize: unknown key"),
        (lambda p: p.update(segmentor={}), "segmentor: unknown key"),
        (lambda p: p["patchify"].update(stride="20"), "patchify.stride: Input should be a valid integer"),
        (lambda p: p["prepare"].update(mode="crop"), "prepare.mode: Input should be"),
        (lambda p: p["train"]["defaults"].update(progress_bar=1), "train.defaults.progress_bar"),
        (lambda p: p["segmenter"].pop("steps"), "segmenter.steps: missing"),
    ],
)
def test_typos_and_wrong_types_are_refused_with_the_key(params, edit, key):
    edit(params)
    with pytest.raises(InputError) as err:
        validate_params(params)
    assert key in str(err.value) and "Fix:" in str(err.value)


def test_a_number_yaml_reads_as_text_gets_the_hint(params):
    params["train"]["defaults"]["lr"] = yaml.safe_load("lr: 1e-3")["lr"]  # YAML 1.1: a string
    with pytest.raises(InputError, match=r"train\.defaults\.lr: .*write 1\.0e-3"):
        validate_params(params)


def test_an_unknown_profile_is_refused(params):
    params["train"]["profile"] = "fast"
    with pytest.raises(InputError, match="train.profile is 'fast'"):
        validate_params(params)


def test_deep_merge_keeps_the_recipes_other_keys_and_the_key_order():
    base = {"lr": 1.0, "model_kwargs": {"upsample": "deconv", "levels": 2}, "batch_size": 8}
    merged = deep_merge(base, {"model_kwargs": {"upsample": "resize_conv"}, "max_steps": 5})
    assert merged == {"lr": 1.0, "model_kwargs": {"upsample": "resize_conv", "levels": 2}, "batch_size": 8,
                      "max_steps": 5}
    assert list(merged) == ["lr", "model_kwargs", "batch_size", "max_steps"]
    assert base["model_kwargs"] == {"upsample": "deconv", "levels": 2}  # the layers themselves stay as they were


def test_settings_of_every_run_merge_the_layers_and_build_a_config(params):
    train = params["train"]
    train["models"]["lapsrn"]["model_kwargs"]["levels"] = 2  # the profile's upsample must not drop it
    keys = [*train["runs"], *train["finetune"], *train["chains"]]
    for key in keys:
        s = train_settings(train, key, 7)
        assert s["seed"] == 7 and s["model"] == run_entry(train, key)["model"]
        TrainConfig.from_params(s)
    lap = train_settings(train, "sr-x4-lapsrn", 0)
    assert lap["model_kwargs"] == {"upsample": "resize_conv", "levels": 2}
    assert lap["optimizer"] == "adam" and lap["lr"] == train["profiles"]["standard"]["models"]["lapsrn"]["lr"]
    ft = train_settings(train, "denoise-g25-dncnn-green", 0)
    assert ft["init_from"] == "artifacts/models/denoise-g25/dncnn"
    assert train_settings(train, "denoise-g25-dncnn", 0)["init_from"] == "artifacts/models/denoise-blind/dncnn-blind"


def test_a_run_s_own_profile_budget_applies_to_that_run_and_profile_only(params):
    """train.runs.RUN.profiles.PROFILE sits between the profile's budget for the model and the run's overrides:
    another run of the same model and the run under another profile keep the profile's budget."""
    train = params["train"]
    entry = train["runs"]["denoise-sr-srresnet"]
    entry["profiles"] = {"standard": {"max_steps": 1234, "val_every": 99}, "quick": None}
    entry["overrides"] = {"val_every": 77}
    validate_params(params)
    own = train_settings(train, "denoise-sr-srresnet", 0)
    assert own["max_steps"] == 1234 and own["val_every"] == 77  # the run's budget, then its overrides
    assert own["lr"] == train["profiles"]["standard"]["models"]["srresnet"]["lr"]  # the rest: the profile's
    other = train_settings(train, "sr-x4-srresnet", 0)
    assert other["max_steps"] == train["profiles"]["standard"]["models"]["srresnet"]["max_steps"] != 1234
    quick = train_settings({**train, "profile": "quick"}, "denoise-sr-srresnet", 0)
    assert quick["max_steps"] == train["profiles"]["quick"]["models"]["srresnet"]["max_steps"]


def test_a_run_s_budget_for_an_unknown_profile_is_refused(params):
    params["train"]["runs"]["denoise-sr-srresnet"]["profiles"] = {"standrad": {"max_steps": 10}}
    with pytest.raises(InputError, match=r"train\.runs\.denoise-sr-srresnet\.profiles\.standrad: no such profile"):
        validate_params(params)
    params["train"]["runs"]["denoise-sr-srresnet"]["profiles"] = {"standard": {"max_step": 10}}
    with pytest.raises(InputError, match=r"train\.runs\.denoise-sr-srresnet\.profiles\.standard\.max_step: unknown"):
        validate_params(params)


def test_each_evaluation_tracks_only_its_own_task_s_params():
    """Changing one task's baselines reruns that task's evaluation only: evaluate@TASK tracks
    evaluate.baselines.TASK and the shared settings, never the whole section."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["evaluate"]["do"]
    tracked = spec["params"]
    assert "evaluate" not in tracked and "evaluate.baselines" not in tracked
    assert "evaluate.baselines.${key}" in tracked
    assert {t for t in tracked if isinstance(t, str) and t.startswith("evaluate.")} == {
        "evaluate.baselines.${key}", "evaluate.tile", "evaluate.overlap", "evaluate.device", "evaluate.assets"}


def test_a_vessel_aware_run_is_its_base_run_plus_the_vessel_term_only(params):
    """Same data, steps, schedule and seed as the plain model: the loss is the only difference."""
    train = params["train"]
    assert train["vessel"], "params.yaml has vessel-aware runs"
    for key, entry in train["vessel"].items():
        vessel, base = train_settings(train, key, 5), train_settings(train, entry["base"], 5)
        assert {k for k in vessel.keys() | base.keys() if vessel.get(k) != base.get(k)} == {"perceptual"}
        assert vessel["perceptual"]["backbone"] in ("vessel", "vessel_prob") and vessel["perceptual"]["weight"] > 0
        assert run_entry(train, key)["method"] != run_entry(train, entry["base"]).get("method", entry["model"])
    # a profile's budget for the base model reaches its vessel-aware twin too
    train["profiles"]["standard"]["models"]["cdae"]["max_steps"] = 123
    assert train_settings(train, "denoise-g25-cdae-vprob", 0)["max_steps"] == 123


def test_trainconfig_refuses_an_unknown_setting():
    with pytest.raises(InputError, match="lr_rate"):
        TrainConfig.from_params({"model": "cdae", "lr_rate": 0.1})


def test_a_typo_stops_the_stage_before_it_writes_anything(tmp_path, params):
    params["train"]["models"]["cdae"]["lr_rate"] = 0.1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = subprocess.run([sys.executable, str(REPO / "stages" / "train.py"), "denoise-g25-cdae"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert "train.models.cdae.lr_rate: unknown key" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_the_schema_knows_exactly_the_training_settings():
    import dataclasses

    from medrestore.core.params import TrainSettings

    assert set(TrainSettings.model_fields) == {f.name for f in dataclasses.fields(TrainConfig)} - {"model", "seed"}
    # every default of TrainConfig is a value its params.yaml key accepts (the types are derived, not copied)
    defaults = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
                for f in dataclasses.fields(TrainConfig) if f.name not in ("model", "seed")}
    TrainSettings.model_validate(defaults)


def test_a_training_key_is_one_field_of_train_config(params):
    """A field added to TrainConfig is a params.yaml key at once, with its type checked: the schema of a
    layer is derived from the dataclass, not listed a second time."""
    import dataclasses

    from medrestore.core import params as P

    @dataclasses.dataclass
    class WithNewKey(TrainConfig):
        label_smoothing: float = 0.0

    original = P.TrainConfig
    try:
        P.TrainConfig = WithNewKey
        settings = P._settings_model()
    finally:
        P.TrainConfig = original
    assert settings.model_validate({"label_smoothing": 0.1}).label_smoothing == 0.1
    with pytest.raises(Exception, match="label_smoothing"):
        settings.model_validate({"label_smoothing": "a lot"})
    # the real schema: not yet a key
    with pytest.raises(InputError, match="train.defaults.label_smoothing: unknown key"):
        validate_params({**params,
                         "train": {**params["train"],
                                   "defaults": {**params["train"]["defaults"], "label_smoothing": 0.1}}})


def test_runtime_settings_are_applied_but_tracked_by_no_stage(params):
    from medrestore.core.params import with_runtime
    from medrestore.pipeline.deps import stages

    for name, spec in stages().items():
        tracked = [p if isinstance(p, str) else next(iter(p)) for p in spec.get("params", [])]
        assert not any(str(t).startswith("runtime") for t in tracked), name
    train = params["train"]
    s = train_settings(train, "denoise-g25-cdae", 0)
    assert "progress_bar" not in s and "ckpt_every" not in s  # not part of what DVC tracks
    full = with_runtime(s, params["runtime"])
    # 0: at every validation
    assert full["progress_bar"] is sys.stderr.isatty() and full["ckpt_every"] == s["val_every"]
    import io

    with pytest.MonkeyPatch.context() as mp:  # the bar: on a terminal only, quiet in CI and logs
        tty = io.StringIO()
        tty.isatty = lambda: True
        mp.setattr(sys, "stderr", tty)
        assert with_runtime(s, params["runtime"])["progress_bar"] is True
        assert with_runtime(s, {"progress_bar": False})["progress_bar"] is False
    assert with_runtime(s, {"progress_bar": False, "ckpt_every": 7})["ckpt_every"] == 7
    # a training layer's own value wins
    assert with_runtime({**s, "ckpt_every": 3}, {"ckpt_every": 7})["ckpt_every"] == 3


def test_checkpoint_interval_and_progress_bar_leave_the_resume_identity_alone():
    import numpy as np

    from medrestore.training.data import fingerprint

    data = [np.zeros((2, 4, 4, 3), np.uint8)]
    a = fingerprint(TrainConfig(model="cdae", ckpt_every=5, progress_bar=True), data)
    assert a == fingerprint(TrainConfig(model="cdae", ckpt_every=50, progress_bar=False), data)
    assert a != fingerprint(TrainConfig(model="cdae", lr=0.5), data)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p["corrupt"]["tasks"]["denoise-g25"]["train"].update(sigma=-25),
         "corrupt.tasks.denoise-g25.train.sigma is -25: it cannot be negative"),
        (lambda p: p["corrupt"]["tasks"]["denoise-blind"]["train"].update(sigma_range=[50, 0]),
         "sigma_range is [50, 0]: the range is reversed or negative. Fix: give [low, high] with 0 <= low <= high"),
        (lambda p: p["corrupt"]["tasks"]["denoise-sr"]["train"]["steps"][1].update(sigma=-1),
         "corrupt.tasks.denoise-sr.train.steps[1].sigma is -1"),
        (lambda p: p["patchify"].update(patch_size=41),
         "corrupt.tasks.sr-x4.train: a x4 reduction of patchify.patch_size 41 is not whole"),
        (lambda p: p["patchify"].update(val_fraction=0.6, test_fraction=0.5), "nothing is left to train on"),
        (lambda p: p["patchify"].update(stride=0), "patchify.stride: Input should be greater than or equal to 1"),
        (lambda p: p["prepare"].update(fov_threshold=1.5), "prepare.fov_threshold: Input should be less than 1"),
        (lambda p: p["train"]["vessel"]["denoise-g25-cdae-vprob"].update(base="denoise-g25-cdea"),
         "train.vessel.denoise-g25-cdae-vprob.base is 'denoise-g25-cdea', not a train.runs key"),
        (lambda p: p["train"]["vessel"]["denoise-g25-cdae-vprob"].update(model="redae"),
         "differ from its base run's denoise-g25/cdae"),
        (lambda p: p["train"]["vessel"]["denoise-g25-cdae-vfeat"]["overrides"]["perceptual"].update(weight=0.0),
         "train.vessel.denoise-g25-cdae-vfeat: overrides.perceptual needs backbone vessel or vessel_prob and a weight "
         "above 0"),
        (lambda p: p["scoring_segmenter"].update(observer=3), "scoring_segmenter.observer: Input should be 1 or 2"),
        (lambda p: p["evaluate"]["baselines"].pop("sr-x4"), "evaluate.baselines has no entry for task(s) sr-x4"),
    ],
)
def test_values_that_make_no_sense_are_refused_before_any_stage_runs(params, edit, message):
    edit(params)
    with pytest.raises(InputError) as err:
        validate_params(params)
    assert message in str(err.value)
    problems = [line for line in str(err.value).removeprefix("params.yaml: ").split("\n  ") if line.strip()]
    assert problems and all("Fix:" in line for line in problems), str(err.value)  # every problem says what to do


# ------------------------------------------------------------------ checked before DVC touches any output
def test_a_duplicate_key_is_refused_naming_it_and_both_lines(tmp_path, monkeypatch):
    from medrestore.core.io import InputError
    from medrestore.pipeline.stage import params as stage_params

    text = (REPO / "params.yaml").read_text()
    assert "\nprepare:\n" in text
    head, tail = text.split("\nprepare:\n", 1)
    (tmp_path / "params.yaml").write_text(f"{head}\nprepare:\n  size: 64\n{tail}")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as info:
        stage_params()
    msg = str(info.value)
    assert "params.yaml" in msg and "duplicate key 'size'" in msg and "Fix:" in msg
    assert "dvc checkout" in msg  # the stage's outputs are gone by then: how to get them back


def test_check_params_refuses_bad_params_before_any_stage_and_make_runs_it_first(tmp_path, capsys):
    import subprocess

    from medrestore.cli import main

    assert main(["check-params", "--params", str(REPO / "params.yaml")]) == 0
    assert "valid" in capsys.readouterr().out
    bad = yaml.safe_load((REPO / "params.yaml").read_text())
    bad["prepare"]["size"] = -3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad))
    assert main(["check-params", "--params", str(tmp_path / "params.yaml")]) == 2
    assert "prepare.size" in capsys.readouterr().err
    assert main(["check-params", "--params", str(tmp_path / "missing.yaml")]) == 2
    assert "no such params file" in capsys.readouterr().err
    for target in ("repro", "quick"):
        lines = subprocess.run(["make", "-n", "-W", "requirements.lock", target, "STAMP=/dev/null"], cwd=REPO,
                               capture_output=True,
                               text=True, check=True).stdout.splitlines()
        check = next(i for i, line in enumerate(lines) if "check-params" in line)
        run = next(i for i, line in enumerate(lines) if "dvc repro" in line or "quick_tour.py" in line)
        assert check < run, target
