"""The training engine: one Lightning module for every paired restoration model.

What the stage gets:
- ``model.safetensors`` + ``model.json``: the weights of the best validation PSNR (no pickle);
- ``metrics.json``: best and final validation PSNR, steps, parameter count (no wall times: they
  would make the file differ on every run; times go to MLflow);
- ``curve.csv``: step, train loss, validation loss and PSNR, read by ``dvc plots``.

Lightning checkpoints for resuming live outside the DVC outputs, in ``ckpt_dir/<fingerprint>``
where the fingerprint hashes the config and the training data: a rerun of a killed stage resumes
from the last checkpoint, and on CPU ends byte-identical to an uninterrupted run, because batches
and augmentations are functions of (seed, step) rather than of iterator state.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import lightning.pytorch as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from medrestore.io import write_json_atomic, write_text_atomic
from medrestore.losses import make_loss
from medrestore.models import build_model, count_parameters, save_model


@dataclass
class TrainConfig:
    model: str
    model_kwargs: dict = field(default_factory=dict)
    loss: str = "mse"
    loss_kwargs: dict = field(default_factory=dict)
    lr: float = 1e-3
    schedule: str = "cosine"  # cosine | inverse_time | constant
    lr_decay: float = 0.0  # inverse_time: lr / (1 + lr_decay * step) (Keras' "decay")
    lr_min: float = 1e-5
    batch_size: int = 32
    max_steps: int = 200
    val_every: int = 50
    early_stop_patience: int = 0  # validation checks without improvement; 0 = off
    seed: int = 0
    accelerator: str = "cpu"
    devices: int | str = 1
    strategy: str = "auto"
    precision: str = "32-true"
    augment: bool = True
    progress_bar: bool = True
    ckpt_every: int = 100
    channels_last: bool = True  # measured faster for 3x3 convs on CPU (see README, performance)

    @classmethod
    def from_params(cls, params: dict) -> "TrainConfig":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in params.items() if k in known})


class PairedPatches(Dataset):
    """(degraded, clean) pairs from two aligned (N, P, P, C) uint8 arrays, as float CHW in [0, 1]."""

    def __init__(self, clean: np.ndarray, degraded: np.ndarray) -> None:
        if clean.shape != degraded.shape:
            raise ValueError(f"clean {clean.shape} and degraded {degraded.shape} patches differ in shape")
        self.clean, self.degraded = clean, degraded

    def __len__(self) -> int:
        return self.clean.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        to_t = lambda a: torch.from_numpy(np.array(a, copy=True).transpose(2, 0, 1)).float().div_(255.0)  # noqa: E731
        return to_t(self.degraded[i]), to_t(self.clean[i])


class StepBatchSampler(Sampler[list[int]]):
    """Endless batches whose content is a pure function of (seed, step, rank).

    Epoch ``e`` is a permutation drawn from ``seed`` and ``e``; step ``s`` takes the next slice of
    it. Because nothing depends on iterator state, a run resumed at step ``s`` draws exactly the
    batches an uninterrupted run draws, and each DDP rank takes its own share of every batch.
    """

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start_step = lambda: 0
        self.rank, self.world = 0, 1

    def batch_at(self, step: int) -> list[int]:
        per_epoch = max(self.n // (self.batch_size * self.world), 1)
        epoch, k = divmod(step, per_epoch)
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        size = self.batch_size * self.world
        chunk = np.resize(perm, (per_epoch * size,))[k * size : (k + 1) * size]
        return chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        step = int(self.start_step())
        while True:
            yield self.batch_at(step)
            step += 1


def fingerprint(cfg: "TrainConfig", arrays: list[np.ndarray]) -> str:
    """Identity of a training run: its config and the bytes of its data (for resume folders)."""
    h = hashlib.sha256(json.dumps(dataclasses.asdict(cfg), sort_keys=True).encode())
    for a in arrays:
        h.update(str(a.shape).encode())
        flat = np.asarray(a).reshape(-1)
        for i in range(0, flat.size, 1 << 26):
            h.update(np.ascontiguousarray(flat[i : i + (1 << 26)]).tobytes())
    return h.hexdigest()[:16]


def psnr_per_image(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    mse = ((pred.clamp(0, 1) - target) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return 10.0 * torch.log10(1.0 / mse)


class RestorationModule(L.LightningModule):
    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = build_model(cfg.model, **cfg.model_kwargs)
        self.loss_fn = make_loss(cfg.loss, **cfg.loss_kwargs)
        self.best_psnr = -math.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self._val: list[tuple[float, float, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _augment(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # One of the 8 dihedral transforms per batch, a function of (seed, step): resumable.
        k = int(np.random.default_rng([self.cfg.seed, self.global_step, 8]).integers(0, 8))
        if k >= 4:
            x, y = x.flip(-1), y.flip(-1)
        return torch.rot90(x, k % 4, (-2, -1)), torch.rot90(y, k % 4, (-2, -1))

    def on_fit_start(self) -> None:
        if self.cfg.channels_last:
            self.net.to(memory_format=torch.channels_last)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else x

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["medrestore_best"] = {"psnr": self.best_psnr, "state": self.best_state}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        best = checkpoint.get("medrestore_best") or {}
        self.best_psnr = best.get("psnr", -math.inf)
        self.best_state = best.get("state")

    def training_step(self, batch, batch_idx):
        x, y = batch
        x, y = self._layout(x), self._layout(y)
        if self.cfg.augment:
            x, y = self._augment(x, y)
        loss = self.loss_fn(self.net(x), y)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss became {loss.item()} at step {self.global_step}. Fix: lower the learning rate "
                "(train.lr) or check the data; the last good checkpoint is kept."
            )
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=x.shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        x = self._layout(x)
        pred = self.net(x)
        loss = self.loss_fn(pred, y)
        psnr = psnr_per_image(pred, y)
        self._val.append((float(loss) * x.shape[0], float(psnr.sum()), x.shape[0]))

    def on_validation_epoch_end(self) -> None:
        n = sum(v[2] for v in self._val)
        if n == 0:
            return
        val_loss = sum(v[0] for v in self._val) / n
        val_psnr = sum(v[1] for v in self._val) / n
        self._val.clear()
        self.log("val_loss", val_loss, sync_dist=True)
        self.log("val_psnr", val_psnr, prog_bar=True, sync_dist=True)
        if not self.trainer.sanity_checking and val_psnr > self.best_psnr:
            self.best_psnr = val_psnr
            self.best_state = {k: v.detach().cpu().clone().contiguous() for k, v in self.net.state_dict().items()}

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.net.parameters(), lr=self.cfg.lr)
        cfg = self.cfg
        if cfg.schedule == "cosine":
            floor = cfg.lr_min / cfg.lr
            fn = lambda s: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(s, cfg.max_steps) / cfg.max_steps))  # noqa: E731
        elif cfg.schedule == "inverse_time":
            fn = lambda s: 1.0 / (1.0 + cfg.lr_decay * s)  # noqa: E731
        elif cfg.schedule == "constant":
            fn = lambda s: 1.0  # noqa: E731
        else:
            raise ValueError(f"unknown schedule {cfg.schedule!r}: cosine, inverse_time or constant")
        sched = torch.optim.lr_scheduler.LambdaLR(opt, fn)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class CurveRecorder(L.Callback):
    """Collects the loss/PSNR curve for ``curve.csv`` and forwards it to MLflow."""

    def __init__(self, tracker=None, every: int = 10) -> None:
        self.rows: dict[int, dict[str, float]] = {}
        self.tracker = tracker
        self.every = every

    def _record(self, step: int, values: dict[str, float]) -> None:
        self.rows.setdefault(step, {}).update(values)
        if self.tracker is not None:
            self.tracker.log_metrics(values, step=step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every == 0 or step == 1:
            loss = trainer.callback_metrics.get("train_loss")
            if loss is not None:
                lr = trainer.optimizers[0].param_groups[0]["lr"]
                self._record(step, {"train_loss": float(loss), "lr": float(lr)})

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        if "val_psnr" in m:
            self._record(trainer.global_step, {"val_loss": float(m["val_loss"]), "val_psnr": float(m["val_psnr"])})

    def state_dict(self) -> dict:
        return {"rows": {int(k): dict(v) for k, v in self.rows.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.rows = {int(k): dict(v) for k, v in state.get("rows", {}).items()}

    def csv_text(self) -> str:
        cols = ["step", "train_loss", "lr", "val_loss", "val_psnr"]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        for step in sorted(self.rows):
            r = self.rows[step]
            w.writerow([step] + [("" if c not in r else f"{r[c]:.6g}") for c in cols[1:]])
        return buf.getvalue()


class AtomicCheckpoint(L.Callback):
    """``last.ckpt`` every ``every`` steps, written to a temporary file and renamed: a kill at any
    moment leaves the previous checkpoint intact.

    On a step that also validates, the checkpoint is taken after validation, so that a resumed run
    neither repeats nor skips that validation (its PSNR and best weights are in the checkpoint).
    """

    def __init__(self, folder: Path, every: int, val_every: int) -> None:
        self.path = Path(folder) / "last.ckpt"
        self.every = every
        self.val_every = val_every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every == 0 and step % self.val_every != 0:
            self.save(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and trainer.global_step % self.every == 0:
            self.save(trainer)

    def save(self, trainer) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".last.{os.getpid()}.tmp")
        trainer.save_checkpoint(tmp, weights_only=False)
        if trainer.is_global_zero:
            os.replace(tmp, self.path)


class _RankAwareSampler(L.Callback):
    def __init__(self, sampler: StepBatchSampler) -> None:
        self.sampler = sampler

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.sampler.rank, self.sampler.world = trainer.global_rank, trainer.world_size
        self.sampler.start_step = lambda: trainer.global_step


def train_model(
    cfg: TrainConfig,
    train_pairs: tuple[np.ndarray, np.ndarray],
    val_pairs: tuple[np.ndarray, np.ndarray],
    out_dir: Path,
    ckpt_dir: Path,
    tracker=None,
    extra_meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``cfg.model`` on (clean, degraded) patch arrays; write the stage's outputs to ``out_dir``."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    # cuBLAS needs a fixed workspace for deterministic results on GPU (no effect on CPU).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    module = RestorationModule(cfg)
    train_ds = PairedPatches(train_pairs[0], train_pairs[1])
    val_ds = PairedPatches(val_pairs[0], val_pairs[1])
    sampler = StepBatchSampler(len(train_ds), cfg.batch_size, cfg.seed)
    train_dl = DataLoader(train_ds, batch_sampler=sampler)
    val_dl = DataLoader(val_ds, batch_size=max(cfg.batch_size, 64), shuffle=False)
    run_dir = Path(ckpt_dir) / fingerprint(cfg, [*train_pairs, *val_pairs])
    resume = run_dir / "last.ckpt"
    recorder = CurveRecorder(tracker)
    checkpointer = AtomicCheckpoint(run_dir, cfg.ckpt_every, min(cfg.val_every, cfg.max_steps))
    callbacks: list[L.Callback] = [recorder, checkpointer, _RankAwareSampler(sampler)]
    if cfg.early_stop_patience > 0:
        callbacks.append(L.callbacks.EarlyStopping(monitor="val_psnr", mode="max", patience=cfg.early_stop_patience))
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        precision=cfg.precision,
        max_steps=cfg.max_steps,
        max_epochs=-1,
        val_check_interval=min(cfg.val_every, cfg.max_steps),
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        deterministic=True,
        logger=False,
        callbacks=callbacks,
        enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False,
        enable_checkpointing=False,
        use_distributed_sampler=False,
        default_root_dir=str(run_dir),
    )
    start = time.perf_counter()
    if resume.is_file():
        print(f"[medrestore] resuming from {resume}", flush=True)
    trainer.fit(module, train_dl, val_dl, ckpt_path=str(resume) if resume.is_file() else None, weights_only=True)
    seconds = time.perf_counter() - start
    if module.best_state is None:
        raise RuntimeError("training ended before any validation; raise train.max_steps or lower train.val_every")
    final_psnr = float(trainer.callback_metrics.get("val_psnr", float("nan")))
    module.net.load_state_dict(module.best_state)
    net = module.net.cpu().eval().to(memory_format=torch.contiguous_format)
    metrics = {
        "model": cfg.model,
        "parameters": count_parameters(net),
        "steps": int(trainer.global_step),
        "best_val_psnr": round(module.best_psnr, 4),
        "final_val_psnr": round(final_psnr, 4),
        "train_patches": len(train_ds),
        "val_patches": len(val_ds),
    }
    save_model(net, out_dir, name=cfg.model, kwargs=cfg.model_kwargs, extra={"train": metrics, **(extra_meta or {})})
    write_json_atomic(out_dir / "metrics.json", metrics)
    write_text_atomic(out_dir / "curve.csv", recorder.csv_text())
    shutil.rmtree(run_dir, ignore_errors=True)  # finished: the outputs above are the result
    if tracker is not None:
        tracker.log_metrics({"train_seconds": seconds, "patches_per_second": cfg.batch_size * trainer.global_step / seconds})
        tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    return metrics


