"""``train_model``: one run of any registered model, start to finish, resumable.

What the stage gets:
- ``model.safetensors`` + ``model.json``: the restoration network's weights at the best validation
  PSNR (no pickle; GANs: the generator only), with ``scale`` for super-resolution models;
- ``metrics.json``: best and final validation PSNR, steps, parameter count (no wall times: they
  would make the file differ on every run; times go to MLflow);
- ``curve.csv``: step, train loss, lr, validation loss and PSNR (GANs add d_loss and g_adv), read by
  ``dvc plots``.

Lightning checkpoints for resuming live outside the DVC outputs, in ``ckpt_dir/<fingerprint>``
where the fingerprint hashes the config and the training data: a rerun of a killed stage resumes
from the last checkpoint, and on CPU ends byte-identical to an uninterrupted run, because batches
and augmentations are functions of (seed, step) rather than of iterator state.
"""

from __future__ import annotations

import inspect
import logging
import os
import pickle
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as L
import torch
from torch.utils.data import DataLoader

from medrestore.core.io import InputError, write_json_atomic, write_text_atomic
from medrestore.models import MODELS, count_parameters, save_model
from medrestore.serving.colour import colour_statistics
from medrestore.training.callbacks import (
    AtomicCheckpoint,
    CurveRecorder,
    ProgressLog,
    RankAwareSampler,
    duration,
)
from medrestore.training.config import TrainConfig
from medrestore.training.convergence import convergence
from medrestore.training.data import (
    PairedPatches,
    StepBatchSampler,
    UnpairedCrops,
    UnpairedPatches,
    UnpairedStepSampler,
    crop_table,
    fingerprint,
    pair_scale,
)
from medrestore.training.gan import GAN_MODULES
from medrestore.training.paired import RestorationModule


def seed_run(seed: int) -> None:
    """What every training run starts with (restoration models and the vessel segmenter): seed
    Python, NumPy and torch (and data-loader workers) and make torch deterministic, so that on CPU
    the same inputs and seed give byte-identical weights."""
    L.seed_everything(seed, workers=True, verbose=False)
    # cuBLAS needs a fixed workspace for deterministic results on GPU (no effect on CPU).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


class _DropTips(logging.Filter):
    """Drops Lightning's "💡 Tip:" records (an advertisement for its cloud logger on every Trainer built
    without one; runs here track to MLflow on purpose)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def quiet_lightning() -> None:
    """Filter Lightning's tips at their loggers, and its pytree deprecation warning (idempotent): a log of
    `dvc repro` shows them once per training stage otherwise."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                 "lightning_utilities.core.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in logger.filters):
            logger.addFilter(_DropTips())
    # Lightning 2.6's own use of torch's pytree API (deprecated in torch), once per fit: nothing for this project to
    # change
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")


def make_trainer(root: str | Path, **options: Any) -> L.Trainer:
    """A Lightning ``Trainer`` as every training run here has it: deterministic, no Lightning logger
    (the stage tracks to MLflow), no Lightning checkpointing or model summary (each run saves its own
    outputs), Lightning's files under ``root``, no tips (:func:`quiet_lightning`). ``options``: the run's
    own (accelerator, devices, max_steps, callbacks, ...)."""
    quiet_lightning()
    return L.Trainer(
        deterministic=True,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=str(root),
        **options,
    )


def _world(cfg: TrainConfig) -> int:
    per_node = cfg.devices if isinstance(cfg.devices, int) and cfg.devices > 0 else 1
    return per_node * max(int(cfg.num_nodes), 1)


def resolve_config(cfg: TrainConfig, train_pairs: tuple[np.ndarray, np.ndarray], n_train: int) -> TrainConfig:
    """Fill in what follows from the data: the SR scale of the network, ``max_steps`` from ``epochs``."""
    if cfg.model not in MODELS:
        raise InputError(f"unknown model {cfg.model!r}. Fix: use one of {', '.join(MODELS)}.")
    scale = pair_scale(*train_pairs)
    kwargs = dict(cfg.model_kwargs)
    accepts_scale = "scale" in inspect.signature(MODELS[cfg.model].cls).parameters
    if scale != 1 or "scale" in kwargs:
        if not accepts_scale:
            raise InputError(f"the task's inputs are {scale}x smaller than the targets, and {cfg.model!r} cannot "
                             "upscale. Fix: train an SR model (lapsrn, srresnet, srgan).")
        if kwargs.get("scale", scale) != scale:
            raise InputError(f"model_kwargs.scale={kwargs['scale']} but the task's inputs are {scale}x smaller. Fix: "
                             "drop model_kwargs.scale.")
        kwargs["scale"] = scale
    elif accepts_scale:
        kwargs["scale"] = 1  # same-size task: LapSRN's deblurring mode, SRResNet without upsampling
    changes: dict[str, Any] = {"model_kwargs": kwargs}
    per_epoch = max(n_train // (cfg.batch_size * _world(cfg)), 1)
    if cfg.epochs and cfg.epochs > 0:
        changes["max_steps"] = max(int(round(cfg.epochs * per_epoch)), 1)
    if cfg.pretrain_epochs and cfg.pretrain_epochs > 0:
        changes["pretrain_steps"] = int(round(cfg.pretrain_epochs * per_epoch))
    return cfg.replace(**changes)


def validation_subset(val_pairs: tuple[np.ndarray, ...], limit: int) -> tuple[np.ndarray, ...]:
    """``limit`` (clean, degraded[, FOV mask]) validation rows evenly spaced over the set, which is stored
    image by image, so every validation image keeps its share; all of them when ``limit`` is 0 or larger."""
    n = int(val_pairs[0].shape[0])
    if limit <= 0 or n <= limit:
        return val_pairs
    keep = np.unique(np.linspace(0, n - 1, int(limit)).round().astype(np.int64))
    return tuple(a[keep] for a in val_pairs)


def start_from(net: torch.nn.Module, folder: Path, run: str) -> None:
    """Load the weights of a trained model folder into ``net`` (fine-tuning): the same network
    (``model.json``'s class and arguments), so every tensor must match by name and shape."""
    from medrestore.models import load_model

    if not (folder / "model.json").is_file():
        raise InputError(f"run {run!r}: init_from {folder} has no model.json. Fix: train that model first (its train "
                         "stage) or drop init_from.")
    source, _meta = load_model(folder)
    if type(source) is not type(net):
        raise InputError(f"run {run!r}: init_from {folder} holds a {type(source).__name__}, not a "
                         f"{type(net).__name__}. Fix: start from a model of the same network.")
    try:
        net.load_state_dict(source.state_dict())
    except RuntimeError as exc:
        raise InputError(f"run {run!r}: the weights in {folder} do not fit this network ({exc}). Fix: use the same "
                         "model_kwargs as that model.") from exc


def _unpaired_sides(clean: np.ndarray, train_domain: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The training patches each side of an unpaired model draws from: (clean side, degraded side) rows
    of ``train_domain`` 0 and 1; without ``train_domain``, every patch on both sides."""
    if train_domain is None:
        every = np.arange(clean.shape[0])
        return every, every
    domain = np.asarray(train_domain)
    if domain.shape != (clean.shape[0],):
        raise InputError(f"train_domain has shape {domain.shape}, expected ({clean.shape[0]},). Fix: rerun the "
                         "corrupt stage.")
    return np.flatnonzero(domain == 0), np.flatnonzero(domain == 1)


def _crop_training_set(
    cfg: TrainConfig,
    run: str,
    train_pairs: tuple[np.ndarray, np.ndarray],
    sides: tuple[np.ndarray, np.ndarray],
    train_domain: np.ndarray | None,
    train_index: tuple[np.ndarray, int] | None,
) -> tuple[UnpairedCrops, dict[str, int], np.ndarray, np.ndarray]:
    """A cyclegan run's crops of ``cfg.crop_patches`` x ``cfg.crop_patches`` adjacent training patches
    (:func:`~medrestore.training.data.crop_table`): a side draws the crops whose patches all belong to it
    (every crop, both sides, without ``train_domain``). Returns the dataset, ``metrics.json``'s
    ``train_crops`` and the (clean, degraded) crops."""
    clean, degraded = train_pairs
    clean_idx, degraded_idx = sides
    if train_index is None:
        raise InputError(
            f"run {run!r}: crop_patches needs the training patches' index (train_index.npy) and stride. "
            "Fix: rerun the patchify stage, or set crop_patches: 0."
        )
    index, stride = train_index
    if len(index) != clean.shape[0]:
        raise InputError(
            f"train_index.npy lists {len(index)} patches, the training arrays hold {clean.shape[0]}. "
            "Fix: rerun the patchify and corrupt stages."
        )
    cells = crop_table(index, int(stride), int(cfg.crop_patches))
    side = np.full(clean.shape[0], -1)
    side[clean_idx], side[degraded_idx] = 0, 1  # a crop belongs to a domain when all its patches do
    flat = side[cells.reshape(len(cells), -1)]
    clean_cells, degraded_cells = cells[(flat == 0).all(1)], cells[(flat == 1).all(1)]
    if train_domain is None:
        clean_cells = degraded_cells = cells
    train_ds = UnpairedCrops(clean, degraded, clean_cells, degraded_cells, int(stride))
    crops = {
        "size": clean.shape[1] + (int(cfg.crop_patches) - 1) * int(stride),
        "clean": len(clean_cells),
        "degraded": len(degraded_cells),
    }
    return train_ds, crops, clean_cells, degraded_cells


def _unpaired_training_set(
    cfg: TrainConfig,
    run: str,
    train_pairs: tuple[np.ndarray, np.ndarray],
    train_domain: np.ndarray | None,
    train_index: tuple[np.ndarray, int] | None,
) -> tuple[UnpairedPatches | UnpairedCrops, StepBatchSampler, dict[str, int] | None]:
    """A cyclegan run's training set (single patches, or crops with ``cfg.crop_patches`` > 1), its batch
    sampler (each side drawn independently) and ``train_crops`` (None without crops)."""
    clean, degraded = train_pairs
    clean_idx, degraded_idx = _unpaired_sides(clean, train_domain)
    crops = None
    if cfg.crop_patches > 1:
        train_ds, crops, clean_idx, degraded_idx = _crop_training_set(
            cfg, run, train_pairs, (clean_idx, degraded_idx), train_domain, train_index
        )
    else:
        train_ds = UnpairedPatches(clean, degraded, clean_idx, degraded_idx)
    sampler = UnpairedStepSampler(len(clean_idx), len(degraded_idx), cfg.batch_size, cfg.seed)
    return train_ds, sampler, crops


def _paired_training_set(
    cfg: TrainConfig,
    run: str,
    train_pairs: tuple[np.ndarray, np.ndarray],
    train_domain: np.ndarray | None,
    fov: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[PairedPatches, StepBatchSampler, None]:
    """A paired model's training set (with the FOV masks of its loss when ``cfg.fov_loss``) and its batch
    sampler; refuses the unpaired and cyclegan-only inputs."""
    clean, degraded = train_pairs
    if train_domain is not None:
        raise InputError(
            f"{cfg.model!r} trains on pairs, but this task is unpaired (train_domain.npy). Fix: use "
            "cyclegan or cyclegan-fc."
        )
    if cfg.crop_patches > 1:
        raise InputError(
            f"run {run!r}: crop_patches is for the cyclegan models; {cfg.model!r} trains on single "
            "patches. Fix: drop crop_patches."
        )
    if cfg.fov_loss and fov is None:
        raise InputError(
            f"run {run!r}: fov_loss needs the patches' FOV masks (train_fov.npy, val_fov.npy). "
            "Fix: rerun the patchify stage, or set fov_loss: false."
        )
    train_ds = PairedPatches(clean, degraded, fov[0] if cfg.fov_loss else None)
    return train_ds, StepBatchSampler(len(train_ds), cfg.batch_size, cfg.seed), None


def _training_module(cfg: TrainConfig, trainer: str, run: str) -> L.LightningModule:
    """The Lightning module of the model's ``trainer`` kind (a GAN's, or the paired one), its network's
    weights drawn from the seeded generator, then replaced by ``cfg.init_from``'s when that is set."""
    module = GAN_MODULES[trainer](cfg, run) if trainer in GAN_MODULES else RestorationModule(cfg, run)
    if cfg.init_from:
        start_from(module.net, Path(cfg.init_from), run)
    return module


def _validation_set(
    cfg: TrainConfig, val_pairs: tuple[np.ndarray, np.ndarray], val_fov: np.ndarray | None
) -> tuple[tuple[np.ndarray, ...] | list[np.ndarray], np.ndarray | None, PairedPatches]:
    """The validation rows a run keeps (:func:`validation_subset` of ``cfg.val_patches``), with their FOV
    masks when the loss is masked: (clean, degraded), the masks (or None), the dataset."""
    if val_fov is not None:
        *val_pairs, val_fov = validation_subset((*val_pairs, val_fov), cfg.val_patches)
    else:
        val_pairs = validation_subset(val_pairs, cfg.val_patches)
    return val_pairs, val_fov, PairedPatches(val_pairs[0], val_pairs[1], val_fov)


def _identity_arrays(
    cfg: TrainConfig,
    data: list[np.ndarray],
    train_domain: np.ndarray | None,
    fovs: list[np.ndarray],
    crop_index: tuple[np.ndarray, int] | None,
) -> list[np.ndarray]:
    """What, with the config, identifies a run (its resume folder's :func:`fingerprint`): the training and
    validation arrays ``data``, the domains, the FOV masks the loss uses, the crops' patch index and
    stride, the starting weights of a fine-tuning run."""
    arrays = data + ([] if train_domain is None else [np.asarray(train_domain)])
    arrays += fovs
    if crop_index is not None:
        arrays += [np.asarray(crop_index[0]), np.asarray([crop_index[1]])]
    if cfg.init_from:  # the starting weights are part of the run's identity (resume folder)
        arrays.append(np.frombuffer((Path(cfg.init_from) / "model.safetensors").read_bytes(), np.uint8))
    return arrays


def _run_trainer(
    cfg: TrainConfig, run: str, run_dir: Path, tracker, sampler: StepBatchSampler
) -> tuple[L.Trainer, CurveRecorder]:
    """The run's Trainer (:func:`make_trainer`) and the recorder of its curve: validation every
    ``cfg.val_every`` steps, checkpoints in ``run_dir``, progress lines off a terminal, early stopping
    when ``cfg.early_stop_patience`` is set."""
    val_every = min(cfg.val_every, cfg.max_steps)
    recorder = CurveRecorder(tracker)
    checkpointer = AtomicCheckpoint(run_dir, cfg.ckpt_every, val_every, run)
    callbacks: list[L.Callback] = [recorder, checkpointer, RankAwareSampler(sampler)]
    if not cfg.progress_bar:  # off a terminal (a log): a progress line every 5% of the steps or minute
        callbacks.append(ProgressLog(run, cfg.max_steps))
    if cfg.early_stop_patience > 0:
        callbacks.append(L.callbacks.EarlyStopping(monitor="val_psnr", mode="max", patience=cfg.early_stop_patience))
    trainer = make_trainer(
        run_dir,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        precision=cfg.precision,
        max_steps=cfg.max_steps,
        max_epochs=-1,
        val_check_interval=val_every,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        enable_progress_bar=cfg.progress_bar,
        use_distributed_sampler=False,
    )
    return trainer, recorder


def _fit(
    trainer: L.Trainer, module: L.LightningModule, loaders: tuple[DataLoader, DataLoader], resume: Path, run: str
) -> float:
    """Fit ``module`` on the (train, validation) ``loaders``, from the checkpoint ``resume`` when there is
    one (tensors only: anything else is refused); returns the seconds it took."""
    start = time.perf_counter()
    if resume.is_file():
        print(f"[medrestore] {run}: resuming from {resume}", flush=True)
    try:
        with warnings.catch_warnings():
            # a frozen loss network (a vessel segmenter, VGG) stays in eval mode on purpose
            warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
            trainer.fit(module, *loaders, ckpt_path=str(resume) if resume.is_file() else None, weights_only=True)
    except (pickle.UnpicklingError, EOFError) as exc:
        if not resume.is_file():
            raise
        raise InputError(
            f"{resume}: refused: the checkpoint holds more than tensors or is corrupt ({type(exc).__name__}). "
            f"Fix: delete {resume.parent} to train from the start; never resume from a checkpoint of unknown origin."
        ) from exc
    return time.perf_counter() - start


def _run_metrics(
    cfg: TrainConfig, run: str, module: L.LightningModule, trainer: L.Trainer, recorder: CurveRecorder,
    counts: tuple[int, int], scale: int, crops: dict[str, int] | None,
) -> tuple[dict[str, Any], list[tuple[int, float]], dict[str, Any], float]:
    """``metrics.json`` of a fitted run (``counts``: training and validation patches), the curve's
    (step, val_psnr) points, the :func:`convergence` verdict and the final validation PSNR."""
    if module.best_state is None:
        raise RuntimeError(
            f"run {run!r}: training ended before any validation. Fix: raise train.max_steps or lower train.val_every."
        )
    final_psnr = float(trainer.callback_metrics.get("val_psnr", float("nan")))
    points = [(step, row["val_psnr"]) for step, row in recorder.rows.items() if "val_psnr" in row]
    verdict = convergence(points, int(trainer.global_step))
    metrics = {
        "model": cfg.model,
        "parameters": count_parameters(module.net),
        "steps": int(trainer.global_step),
        "best_val_psnr": round(module.best_psnr, 4),
        "final_val_psnr": round(final_psnr, 4),
        "train_patches": counts[0],
        "val_patches": counts[1],
        "scale": scale,
        "converged": verdict["converged"],
        "last_quarter_gain_db": verdict["last_quarter_gain_db"],
        "final_drop_db": verdict.get("final_drop_db"),
    }
    if crops is not None:
        metrics["train_crops"] = crops
    return metrics, points, verdict, final_psnr


def _model_meta(
    metrics: dict[str, Any], scale: int, task_kind: str, clean: np.ndarray, train_domain: np.ndarray | None,
    extra_meta: dict[str, Any] | None,
) -> dict[str, Any]:
    """What ``model.json`` adds to the network's description: the run's metrics, the SR scale, the task
    kind, the colour range of the training targets (the ``clean`` patches of the clean side) and
    ``extra_meta``."""
    # the colour range of the training targets: medrestore restore warns on inputs far outside it
    colour = colour_statistics(clean, None if train_domain is None else np.flatnonzero(np.asarray(train_domain) == 0))
    return {
        "train": metrics,
        "scale": scale,
        "task_kind": task_kind,
        **({"colour": colour} if colour else {}),
        **(extra_meta or {}),
    }


def _write_outputs(
    out_dir: Path, cfg: TrainConfig, module: L.LightningModule, metrics: dict[str, Any], curve_csv: str,
    meta: dict[str, Any],
) -> None:
    """The stage's outputs: the best validation weights (``model.safetensors``, ``model.json`` with
    ``meta``), ``metrics.json`` and ``curve.csv``."""
    module.net.load_state_dict(module.best_state)
    net = module.net.cpu().eval().to(memory_format=torch.contiguous_format)
    save_model(net, out_dir, name=cfg.model, kwargs=cfg.model_kwargs, extra=meta)
    write_json_atomic(out_dir / "metrics.json", metrics)
    write_text_atomic(out_dir / "curve.csv", curve_csv)


def _summary_line(
    run: str, metrics: dict[str, Any], seconds: float, psnr: tuple[float, float], points: list[tuple[int, float]],
    verdict: dict[str, Any],
) -> str:
    """The run's closing log line: steps and time, best (``psnr[0]``, at its step) and final (``psnr[1]``)
    validation PSNR, the convergence verdict."""
    best_step = max(points, key=lambda p: p[1])[0] if points else None
    return (
        f"[medrestore] {run}: trained {metrics['steps']} steps in {duration(seconds)}; "
        f"best val PSNR {psnr[0]:.2f} dB"
        + (f" at step {best_step}" if best_step is not None else "")
        + f", final {psnr[1]:.2f} dB; "
        + ("converged" if verdict["converged"] else f"not converged ({verdict.get('why', 'still improving')})")
    )


def _log_run(tracker, patches: int, seconds: float, metrics: dict[str, Any]) -> None:
    """The run's metrics to ``tracker`` (MLflow): training time and throughput (``patches`` drawn in
    ``seconds``), then the numbers of ``metrics.json``."""
    tracker.log_metrics({"train_seconds": seconds, "patches_per_second": patches / seconds})
    tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})


def train_model(
    cfg: TrainConfig,
    train_pairs: tuple[np.ndarray, np.ndarray],
    val_pairs: tuple[np.ndarray, np.ndarray],
    out_dir: Path,
    ckpt_dir: Path,
    tracker=None,
    extra_meta: dict[str, Any] | None = None,
    *,
    train_domain: np.ndarray | None = None,
    run: str | None = None,
    fov: tuple[np.ndarray, np.ndarray] | None = None,
    train_index: tuple[np.ndarray, int] | None = None,
) -> dict[str, Any]:
    """Train ``cfg.model`` on (clean, degraded) patch arrays; write the stage's outputs to ``out_dir``.

    ``train_domain`` (unpaired tasks): per training patch, 0 = use its clean version only, 1 = use its
    degraded version only. Paired models refuse it; cyclegan models without it draw both sides
    independently from all patches. ``run`` names the run in errors (default: the model).
    ``fov``: the (train, val) patches' FOV masks (patchify's ``{split}_fov.npy``); with ``cfg.fov_loss``
    a paired model's loss and validation PSNR count the pixels inside the FOV only.
    ``train_index``: (patchify's ``train_index.npy``, the patch stride), which cyclegan models with
    ``cfg.crop_patches`` > 1 need to assemble their crops of adjacent training patches.

    The steps: seed; the training set; the network; the validation set; fit, resuming from the run's folder
    under ``ckpt_dir``; on the main process only, the outputs, a closing log line, the metrics to ``tracker``.
    """
    spec = MODELS.get(cfg.model)
    if spec is None:
        raise InputError(f"unknown model {cfg.model!r}. Fix: use one of {', '.join(MODELS)}.")
    run = run or cfg.model
    seed_run(cfg.seed)
    if spec.trainer == "cyclegan":
        train_ds, sampler, crops = _unpaired_training_set(cfg, run, train_pairs, train_domain, train_index)
    else:
        train_ds, sampler, crops = _paired_training_set(cfg, run, train_pairs, train_domain, fov)
    cfg = resolve_config(cfg, train_pairs, len(train_ds))
    scale = pair_scale(*train_pairs)
    module = _training_module(cfg, spec.trainer, run)
    masked = cfg.fov_loss and spec.trainer != "cyclegan"
    val_pairs, val_fov, val_ds = _validation_set(cfg, val_pairs, fov[1] if masked else None)
    train_dl = DataLoader(train_ds, batch_sampler=sampler)
    val_dl = DataLoader(val_ds, batch_size=max(cfg.batch_size, 64), shuffle=False)
    arrays = _identity_arrays(cfg, [*train_pairs, *val_pairs], train_domain, [fov[0], val_fov] if masked else [],
                              train_index if crops is not None else None)
    run_dir = Path(ckpt_dir) / fingerprint(cfg, arrays)
    resume = run_dir / "last.ckpt"
    module.ckpt_path = resume
    trainer, recorder = _run_trainer(cfg, run, run_dir, tracker, sampler)
    seconds = _fit(trainer, module, (train_dl, val_dl), resume, run)
    clean = train_pairs[0]
    metrics, points, verdict, final_psnr = _run_metrics(
        cfg, run, module, trainer, recorder, (int(clean.shape[0]), len(val_ds)), scale, crops
    )
    if not trainer.is_global_zero:
        return metrics
    meta = _model_meta(metrics, scale, spec.task, clean, train_domain, extra_meta)
    _write_outputs(out_dir, cfg, module, metrics, recorder.csv_text(), meta)
    shutil.rmtree(run_dir, ignore_errors=True)  # finished: the outputs above are the result
    print(_summary_line(run, metrics, seconds, (module.best_psnr, final_psnr), points, verdict), flush=True)
    if tracker is not None:
        _log_run(tracker, cfg.batch_size * trainer.global_step, seconds, metrics)
    return metrics
