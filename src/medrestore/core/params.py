"""params.yaml: its schema and the settings of one training run (:class:`TrainConfig`, the one
definition of a training key: :data:`TrainSettings`, a layer of params.yaml's ``train``, is derived from it).

Every section is a pydantic model that refuses unknown keys and wrong types (strict: ``"1e-3"`` is
a string to YAML 1.1, not a number; ``true`` is no int), so a typo such as ``lr_rate: 0.1`` under
a model stops the stage with the key's full path instead of training with the default rate.
:func:`validate_params` runs in every stage before anything is read or written
(:func:`medrestore.pipeline.stage.params`). Validation only checks: the stages get params.yaml's
own values, unchanged.

The settings of one run (:func:`train_settings`) merge these layers, later wins, dictionaries
merged key by key at every depth (``model_kwargs: {upsample: ...}`` in a profile keeps the
recipe's other ``model_kwargs``)::

    train.defaults <- train.models[model] (the paper's recipe) <- train.profiles[profile].defaults
      <- train.profiles[profile].models[model] (the budget) <- the run's profiles[profile] (its own
      budget under that profile) <- the run's overrides
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from medrestore.core.io import InputError

PROFILES_DOC = "quick | standard | paper"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


@dataclass
class TrainConfig:
    model: str
    model_kwargs: dict = field(default_factory=dict)
    loss: str = "mse"
    loss_kwargs: dict = field(default_factory=dict)
    # optimiser
    optimizer: str = "adam"  # adam | sgd
    lr: float = 1e-3
    betas: Sequence[float] = (0.9, 0.999)  # two numbers
    eps: float = 1e-8
    momentum: float = 0.9  # sgd
    weight_decay: float = 0.0
    schedule: str = "cosine"  # one of SCHEDULES
    lr_decay: float = 0.0  # inverse_time: lr / (1 + lr_decay * step) (Keras' "decay")
    lr_min: float = 1e-5  # cosine floor
    lr_milestones: list[float] = field(default_factory=lambda: [0.5])  # step: fractions of max_steps
    lr_gamma: float = 0.1  # step: factor at each milestone
    warmup_steps: int = 0  # > 0: the rate rises linearly from lr / warmup_steps over these first steps
    # a trained model folder (artifacts/models/TASK/METHOD) whose weights start the network: fine-tuning
    # (Hayee2017 fine-tuned DnCNN from pre-trained weights); "" = from scratch
    init_from: str = ""
    # length and checks
    batch_size: int = 32
    max_steps: int = 200
    epochs: float = 0  # > 0: max_steps = epochs x (batches per pass over the training patches)
    val_every: int = 50
    val_patches: int = 0  # > 0: validate on this many patches, evenly spaced over the validation set; 0 = all
    early_stop_patience: int = 0  # validation checks without improvement; 0 = off
    seed: int = 0
    # devices
    accelerator: str = "cpu"
    devices: int | str = 1
    num_nodes: int = 1  # machines; DDP world size = devices x num_nodes (torchrun or a cluster launcher)
    strategy: str = "auto"
    precision: str = "32-true"
    augment: bool = True
    # paired models: the loss and the validation PSNR count only the pixels inside the field of view
    # (patchify's {split}_fov.npy), as the evaluation does; patches may then cross the FOV's edge
    fov_loss: bool = False
    progress_bar: bool = True
    ckpt_every: int = 100
    channels_last: bool = True  # measured faster for 3x3 convs on CPU (see README, performance)
    # extra perceptual term: {backbone: vgg19 | vessel | discriminator, weight, path, layers, criterion}
    perceptual: dict = field(default_factory=dict)
    # GANs (srgan, cyclegan, cyclegan-fc)
    disc_kwargs: dict = field(default_factory=dict)
    disc_lr: float = 0.0  # 0: same as lr
    pretrain_steps: int = 0  # srgan: content loss only for these steps, then adversarial
    pretrain_epochs: float = 0  # > 0: pretrain_steps from epochs, as max_steps from epochs
    adv_weight: float = 1.0  # srgan: 1e-3 (Hayee2017); cyclegan: 1 (Zhao2019)
    cycle_weight: float = 10.0  # cyclegan: image or feature cycle term (Zhao2019: 10)
    identity_weight: float = 10.0  # cyclegan: identity term (Zhao2019: 10)
    # cyclegan: the discriminators also see up to this many earlier generated images (CycleGAN: 50); 0 = none
    pool_size: int = 0
    # cyclegan: train on crops of n x n adjacent patches (at the patch stride) of image-level tasks; 0/1 = single
    # patches
    crop_patches: int = 0

    @classmethod
    def from_params(cls, params: dict) -> TrainConfig:
        """The config of ``params``; an unknown key is an error (a typo would otherwise train with a default)."""
        unknown = sorted(set(params) - set(cls.__dataclass_fields__))
        if unknown:
            raise InputError(f"training settings: unknown key(s) {', '.join(unknown)}. Fix: correct the spelling "
                             f"(the keys are TrainConfig's fields: {', '.join(cls.__dataclass_fields__)}).")
        return cls(**params)

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)



#: The keys of :class:`TrainConfig` a params.yaml layer does not set: the run entry names the model,
#: the top-level ``seed`` seeds it.
RUN_KEYS = ("model", "seed")


def _settings_model() -> type[_Strict]:
    """:class:`TrainSettings`, derived from :class:`TrainConfig`: every field but :data:`RUN_KEYS`, each
    optional (a layer sets only what it changes), of the same type. A training key is one field of
    :class:`TrainConfig`; the schema follows."""
    hints = typing.get_type_hints(TrainConfig)
    names = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in RUN_KEYS]
    fields = {name: (Optional[hints[name]], None) for name in names}  # noqa: UP045 (typing.Optional of a runtime type)
    model = create_model("TrainSettings", __base__=_Strict, **fields)
    model.__doc__ = "One layer of a run's settings: any field of :class:`TrainConfig` but ``model`` and ``seed``."
    return model


TrainSettings = _settings_model()


class Download(_Strict):
    sources: list[str]
    mirror: str
    folder: str
    allow_network: bool
    allow_unverified: bool = False
    allow_partial: bool = False  # true: a registered dataset missing pinned files is used without them (warned)


class Prepare(_Strict):
    size: int = Field(ge=16)
    mode: Literal["border_centre", "border", "centre", "centre_crop", "resize"]
    grey: bool = False
    fov_threshold: float = Field(gt=0, lt=1)


class Patchify(_Strict):
    split: Literal["standard", "random"] = "standard"
    patch_size: int = Field(ge=8)
    stride: int = Field(ge=1)
    min_fov_fraction: float = Field(ge=0, le=1)
    val_fraction: float = Field(gt=0, lt=1)
    test_fraction: float = Field(gt=0, lt=1)
    region_grid: int = Field(ge=1)

    @model_validator(mode="after")
    def _three_splits(self) -> Patchify:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(f"val_fraction + test_fraction is {self.val_fraction + self.test_fraction:g}: nothing is "
                             "left to train on. Fix: keep their sum below 1 (e.g. 0.15 each)")
        return self


class Task(_Strict):
    train: dict[str, Any]                 # a corruption spec (kind + its options: medrestore.degradations)
    test: dict[str, dict[str, Any]]       # test variant -> corruption spec
    level: Literal["patch", "image"] = "patch"
    unpaired: bool = False
    # colour augmentation of the clean train patches (medrestore.data.photometric)
    photometric: dict[str, Any] | None = None


class Corrupt(_Strict):
    tasks: dict[str, Task]


def _spec_problems(spec: Any, where: str) -> list[str]:
    """Values no corruption accepts: a negative sigma or probability, a reversed range, a scale below 2
    (the rest is checked by the corruption itself when the corrupt stage runs)."""
    problems: list[str] = []
    if not isinstance(spec, dict):
        return [f"{where}: a corruption is a mapping with a kind, got {spec!r}. Fix: e.g. {{kind: gaussian, sigma: "
                f"25}}."]
    for key, value in spec.items():
        if key == "steps" and isinstance(value, list):
            for i, step in enumerate(value):
                problems += _spec_problems(step, f"{where}.steps[{i}]")
        elif key == "options" and isinstance(value, dict):
            for name, sub in value.items():
                if isinstance(sub, dict):
                    problems += _spec_problems({"kind": name, **sub}, f"{where}.options.{name}")
        elif key in ("sigma", "p") and isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            problems.append(f"{where}.{key} is {value}: it cannot be negative. Fix: give 0 or more (e.g. {key}: "
                            f"{25 if key == 'sigma' else 0.5}).")
        elif key.endswith("_range") and isinstance(value, list):
            if len(value) != 2 or not all(isinstance(v, (int, float)) for v in value):
                problems.append(f"{where}.{key} is {value}: not a [low, high] pair of numbers. Fix: give [low, high].")
            elif value[0] > value[1] or (key in ("sigma_range", "p_range") and value[0] < 0):
                problems.append(f"{where}.{key} is {value}: the range is reversed or negative. Fix: give [low, high] "
                                "with 0 <= low <= high.")
        elif key == "scale" and (not isinstance(value, int) or isinstance(value, bool) or value < 2):
            problems.append(f"{where}.scale is {value!r}: not a whole number of at least 2. Fix: give 2, 3 or 4.")
    return problems


#: The corruption kinds that reduce an image, by their ``scale`` key (the super-resolution tasks'
#: inputs); ``chain`` multiplies the reductions of its steps. Read by every user of :func:`spec_scale`.
SCALING_KINDS = ("downscale", "blur_downscale")


def spec_scale(spec: dict[str, Any]) -> int:
    """How many times smaller than its input a corruption's output is (the product of its SR steps;
    1 for every other kind). The one definition: :mod:`medrestore.degradations` re-exports it."""
    if spec.get("kind") in SCALING_KINDS:
        return int(spec.get("scale", 1))
    if spec.get("kind") == "chain":
        out = 1
        for step in spec.get("steps", []):
            out *= spec_scale(step)
        return out
    return 1


class Profile(_Strict):
    defaults: TrainSettings | None = None
    models: dict[str, TrainSettings | None] = Field(default_factory=dict)


class RunEntry(_Strict):
    task: str
    model: str
    method: str | None = None          # the model's folder name when it is not the model's (chains)
    # profile -> this run's own budget under it (another run of the same model keeps the profile's)
    profiles: dict[str, TrainSettings | None] | None = None
    overrides: TrainSettings | None = None


class FinetuneEntry(RunEntry):
    init: str                             # TASK/METHOD of a trained model


class VesselEntry(RunEntry):
    """A run of train.vessel: ``base`` (a train.runs key) trained again with a vessel term in its loss
    (``overrides.perceptual``); same task, model, data, steps and seed as ``base``."""
    base: str
    method: str                           # required: the folder name of the vessel-aware model

    @model_validator(mode="after")
    def _has_vessel_term(self) -> VesselEntry:
        spec = (self.overrides.perceptual if self.overrides is not None else None) or {}
        if spec.get("backbone") not in ("vessel", "vessel_prob") or not spec.get("weight"):
            raise ValueError("overrides.perceptual needs backbone vessel or vessel_prob and a weight above 0 "
                             "(a vessel-aware run without its vessel term would be the base run again). Fix: e.g. "
                             "overrides: {perceptual: {backbone: vessel_prob, weight: 0.001}}, or remove this run")
        return self


class ChainEntry(RunEntry):
    first: str
    downscale: int
    subset: list[int] | None = None


class Train(_Strict):
    profile: str = "standard"
    defaults: TrainSettings
    models: dict[str, TrainSettings | None] = Field(default_factory=dict)
    profiles: dict[str, Profile | None] = Field(default_factory=dict)
    runs: dict[str, RunEntry]
    finetune: dict[str, FinetuneEntry] | None = None
    chains: dict[str, ChainEntry] | None = None
    vessel: dict[str, VesselEntry] | None = None


class Segmenter(_Strict):
    steps: int
    patch: int
    batch: int
    lr: float
    lr_min: float = 1e-4
    width: int = 8
    depth: int = 3
    threshold: float | str = 0.5
    num_threads: int | None = None
    accelerator: str = "cpu"
    observer: Literal[1, 2] = 1           # whose manual masks it learns: the first or the second observer's


class ScoringSegmenter(_Strict):
    """The independent segmenter that scores vessels (``indep_`` columns): ``segmenter``'s recipe,
    another observer's masks and another seed (``seed`` + ``seed_offset``), so that a vessel-aware
    loss built on ``segmenter`` cannot fool the ruler."""

    observer: Literal[1, 2] = 2
    seed_offset: int = Field(default=1, ge=1)


class Evaluate(_Strict):
    baselines: dict[str, list[str]]       # task -> its classical baselines (each evaluate@TASK tracks its own entry)
    tile: int
    overlap: int
    device: str = "cpu"
    assets: str


class EvaluateExternal(_Strict):
    """The evaluation on images from other cameras than the training set's (medrestore.evaluation.external)."""

    tasks: list[str]                      # one evaluate_external@TASK stage each
    variant: str                          # the task's test corruption (corrupt.tasks.TASK.test.VARIANT)
    profiles: list[str]                   # recolouring targets (medrestore.data.photometric.PROFILES)
    gamma_range: list[float] = Field(min_length=2, max_length=2)
    sample: bool = True                   # also scikit-image's fundus photograph


class Runtime(_Strict):
    """How runs show and save progress. No stage tracks this section: changing it retrains nothing."""

    progress_bar: bool = True
    ckpt_every: int = 0                   # steps between resume checkpoints; 0: at every validation


class Tracking(_Strict):
    required: bool = False


class Params(_Strict):
    seed: int
    download: Download
    prepare: Prepare
    patchify: Patchify
    corrupt: Corrupt
    train: Train
    segmenter: Segmenter | None = None
    scoring_segmenter: ScoringSegmenter | None = None
    evaluate: Evaluate
    evaluate_external: EvaluateExternal | None = None
    runtime: Runtime | None = None
    tracking: Tracking | None = None


def value_problems(params: Mapping[str, Any]) -> list[str]:
    """Rules across keys that the types alone cannot say, each with its fix."""
    problems: list[str] = []
    runs = params["train"]["runs"]
    for key, entry in (params["train"].get("vessel") or {}).items():
        base = runs.get(entry["base"])
        if base is None:
            problems.append(f"train.vessel.{key}.base is {entry['base']!r}, not a train.runs key. Fix: one of "
                            f"{', '.join(runs)}.")
        elif (base["task"], base["model"]) != (entry["task"], entry["model"]):
            problems.append(f"train.vessel.{key}: task/model {entry['task']}/{entry['model']} differ from its base "
                            f"run's {base['task']}/{base['model']}. Fix: the same task and model as "
                            f"train.runs.{entry['base']} (the loss is the only difference).")
    missing = [t for t in params["corrupt"]["tasks"] if t not in params["evaluate"]["baselines"]]
    if missing:
        problems.append(f"evaluate.baselines has no entry for task(s) {', '.join(missing)}. Fix: add "
                        "evaluate.baselines.TASK: [...] for each (an empty list [] for none): each evaluate@TASK "
                        "stage tracks its own entry.")
    external = params.get("evaluate_external") or {}
    trained = {e["task"] for key in ("runs", "finetune", "chains",
                                     "vessel") for e in (params["train"].get(key) or {}).values()}
    for task in external.get("tasks", []):
        test = (params["corrupt"]["tasks"].get(task) or {}).get("test", {})
        if external["variant"] not in test or task not in trained:
            problems.append(f"evaluate_external.tasks lists {task!r}, which is not a corrupt task with a test variant "
                            f"{external['variant']!r} and a trained model. Fix: list only such tasks (or drop "
                            f"{task!r}).")
    patch = params["patchify"]["patch_size"]
    for task, spec in params["corrupt"]["tasks"].items():
        specs = {f"corrupt.tasks.{task}.train": spec["train"],
                 **{f"corrupt.tasks.{task}.test.{k}": v for k, v in spec["test"].items()}}
        for where, one in specs.items():
            problems += _spec_problems(one, where)
            # the patches (test images are cropped)
            if where.endswith(".train") and not any(where in p for p in problems):
                scale = spec_scale(one)
                if scale > 1 and patch % scale:
                    problems.append(f"{where}: a x{scale} reduction of patchify.patch_size {patch} is not whole. Fix: "
                                    f"a patch size that is a multiple of {scale} (e.g. "
                                    f"{patch - patch % scale or scale})")
    return problems


def _where(loc: tuple) -> str:
    return ".".join(str(part) for part in loc if not (isinstance(part, str) and part in ("TrainSettings",)))


def _numeric_text(value: Any) -> bool:
    try:
        return isinstance(value, str) and bool(float(value) == float(value))
    except ValueError:
        return False


def validate_params(params: Mapping[str, Any], path: str | Path = "params.yaml") -> Mapping[str, Any]:
    """``params`` unchanged, or :class:`InputError` naming every unknown key and wrong value with its fix."""
    try:
        Params.model_validate(params)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = _where(err["loc"])
            if err["type"] == "extra_forbidden":
                lines.append(f"{key}: unknown key. Fix: remove it or correct its spelling (the README's params table "
                             "lists the keys).")
            elif err["type"] == "missing":
                lines.append(f"{key}: missing. Fix: add it (params.yaml in the repository has every key).")
            elif err["type"] == "value_error":
                lines.append(f"{key}: {err['msg'].removeprefix('Value error, ')}.")
            elif err["type"].endswith(("_type", "_parsing")) or err["type"] in (
                "literal_error",
                "model_type",
                "dict_type",
                "list_type",
            ):
                hint = (
                    " (write 1.0e-3, not 1e-3: YAML reads the latter as text)"
                    if _numeric_text(err.get("input"))
                    else ""
                )
                lines.append(f"{key}: {err['msg']} (got {err.get('input')!r}). Fix: give a value of that type{hint}.")
            else:
                lines.append(f"{key}: {err['msg']} (got {err.get('input')!r}). Fix: give a value in that range.")
        raise InputError(f"{path}: " + ("\n  " if len(lines) > 1 else "") + "\n  ".join(lines)) from None
    problems = value_problems(params)
    if problems:
        raise InputError(f"{path}: " + ("\n  " if len(problems) > 1 else "") + "\n  ".join(problems))
    profile = params["train"].get("profile", "standard")
    if profile not in (params["train"].get("profiles") or {}):
        raise InputError(f"{path}: train.profile is {profile!r}, not one of train.profiles "
                         f"({', '.join(params['train'].get('profiles') or {}) or 'none defined'}). Fix: use "
                         f"{PROFILES_DOC}.")
    unknown = [f"train.{group}.{key}.profiles.{name}" for group in ("runs", "finetune", "chains", "vessel")
               for key, entry in (params["train"].get(group) or {}).items()
               for name in ((entry or {}).get("profiles") or {}) if name not in params["train"]["profiles"]]
    if unknown:
        raise InputError(f"{path}: {', '.join(unknown)}: no such profile in train.profiles "
                         f"({', '.join(params['train']['profiles'])}). Fix: correct the name or remove the entry.")
    return params


def deep_merge(base: Mapping[str, Any], layer: Mapping[str, Any] | None) -> dict[str, Any]:
    """``base`` updated by ``layer``; where both hold a dictionary under a key, merged the same way.

    Keys keep ``base``'s order, new ones follow in ``layer``'s order (as ``{**base, **layer}``)."""
    out = dict(base)
    for key, value in (layer or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def run_entry(train: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The entry ``key`` of train.runs, train.finetune, train.chains or train.vessel."""
    groups = {"runs": train["runs"], "finetune": train.get("finetune") or {}, "chains": train.get("chains") or {},
              "vessel": train.get("vessel") or {}}
    for entries in groups.values():
        if key in entries:
            return entries[key]
    known = [k for entries in groups.values() for k in entries]
    raise InputError(f"params.yaml: no train.runs.{key}, train.finetune.{key}, train.chains.{key} or "
                     f"train.vessel.{key}. Fix: use one of {', '.join(known)}.")


def with_runtime(settings: Mapping[str, Any], runtime: Mapping[str, Any] | None) -> dict[str, Any]:
    """A run's settings with params.yaml's ``runtime`` (progress bar, shown on a terminal only; resume checkpoints every
    ``ckpt_every`` steps, or at every validation when 0). A layer of ``train`` that sets these keys
    itself keeps its value (and is then tracked by DVC like any training setting)."""
    runtime = dict(runtime or {})
    out = dict(settings)
    # quiet in CI and logs
    out.setdefault("progress_bar", bool(runtime.get("progress_bar", True)) and sys.stderr.isatty())
    if "ckpt_every" not in out:
        out["ckpt_every"] = int(runtime.get("ckpt_every") or 0) or int(out.get("val_every", 50))
    return out


def train_settings(train: Mapping[str, Any], key: str, seed: int,
                   models_root: str | Path = "artifacts/models") -> dict[str, Any]:
    """The settings of run ``key`` (the layers of the module docstring), with ``model``, ``seed`` and,
    for a fine-tuned run, ``init_from`` (the start model's folder under ``models_root``)."""
    entry = run_entry(train, key)
    name = train.get("profile", "standard")
    own = (entry.get("profiles") or {}).get(name)  # the run's own budget under this profile
    if key in (train.get("vessel") or {}):  # the base run's settings, with the vessel term added
        base = train_settings(train, entry["base"], seed, models_root)
        return {**deep_merge(deep_merge(base, own), entry.get("overrides")), "model": base["model"], "seed": seed}
    profiles = train.get("profiles", {})
    if name not in profiles:
        raise InputError(f"params.yaml: train.profile is {name!r}, not one of train.profiles ({', '.join(profiles)}).")
    profile = profiles[name] or {}
    model = entry["model"]
    settings: dict[str, Any] = {}
    for layer in (train["defaults"], (train.get("models") or {}).get(model), profile.get("defaults"),
                  (profile.get("models") or {}).get(model), own, entry.get("overrides")):
        settings = deep_merge(settings, layer)
    if "init" in entry:
        settings["init_from"] = f"{Path(models_root).as_posix()}/{entry['init']}"
    return {**settings, "model": model, "seed": seed}
