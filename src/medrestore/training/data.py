"""Training data: paired and unpaired patch datasets, step-deterministic batch samplers, fingerprints."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from medrestore.core.io import InputError


def _to_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a, copy=True).transpose(2, 0, 1)).float().div_(255.0)


def pair_scale(clean: np.ndarray, degraded: np.ndarray) -> int:
    """How many times smaller the degraded patches are (1 for restoration, 2/4 for super-resolution)."""
    if (
        clean.shape[0] != degraded.shape[0]
        or clean.ndim != 4
        or degraded.ndim != 4
        or clean.shape[3] != degraded.shape[3]
    ):
        raise InputError(f"clean {clean.shape} and degraded {degraded.shape} patches do not pair up. Fix: rerun the "
                         "corrupt stage.")
    s, r = divmod(clean.shape[1], degraded.shape[1])
    if r or clean.shape[2] != degraded.shape[2] * s:
        raise InputError(
            f"clean patches {clean.shape[1:3]} are not an integer multiple of the degraded ones {degraded.shape[1:3]}. "
            "Fix: make patchify.patch_size a multiple of the task's scale."
        )
    return s


class PairedPatches(Dataset):
    """(degraded, clean) pairs from two aligned (N, P, P, C) uint8 arrays, as float CHW in [0, 1].

    For super-resolution the degraded patches are ``scale`` times smaller: (N, P/s, P/s, C).
    With ``fov`` (N, P, P), the clean patches' FOV masks, each item is (degraded, clean, mask) with
    the mask as float 1 x P x P (1 inside the FOV).
    """

    def __init__(self, clean: np.ndarray, degraded: np.ndarray, fov: np.ndarray | None = None) -> None:
        self.scale = pair_scale(clean, degraded)
        if fov is not None and tuple(fov.shape) != tuple(clean.shape[:3]):
            raise InputError(f"FOV masks {tuple(fov.shape)} do not match the clean patches {tuple(clean.shape[:3])}. "
                             "Fix: rerun the patchify stage.")
        self.clean, self.degraded, self.fov = clean, degraded, fov

    def __len__(self) -> int:
        return self.clean.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        if self.fov is None:
            return _to_tensor(self.degraded[i]), _to_tensor(self.clean[i])
        mask = torch.from_numpy(np.array(self.fov[i], dtype=np.float32, copy=True))[None]
        return _to_tensor(self.degraded[i]), _to_tensor(self.clean[i]), mask


class UnpairedPatches(Dataset):
    """Unpaired samples: item ``(i, j)`` is (degraded patch ``degraded_idx[j]``, clean patch ``clean_idx[i]``).

    ``clean_idx`` and ``degraded_idx`` come from the task's ``train_domain.npy`` (0: clean sample,
    1: degraded sample), so the two sides never show the same scene.
    """

    def __init__(self, clean: np.ndarray, degraded: np.ndarray, clean_idx: np.ndarray,
                 degraded_idx: np.ndarray) -> None:
        pair_scale(clean, degraded)
        if len(clean_idx) == 0 or len(degraded_idx) == 0:
            raise InputError("unpaired training needs patches of both domains (train_domain.npy holds only one). Fix: "
                             "rerun the corrupt stage.")
        self.clean, self.degraded = clean, degraded
        self.clean_idx, self.degraded_idx = np.asarray(clean_idx), np.asarray(degraded_idx)

    def __len__(self) -> int:
        return max(len(self.clean_idx), len(self.degraded_idx))

    def __getitem__(self, ij: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        i, j = ij
        return _to_tensor(self.degraded[self.degraded_idx[j]]), _to_tensor(self.clean[self.clean_idx[i]])


def crop_table(index: np.ndarray, stride: int, side: int) -> np.ndarray:
    """The crops of ``side`` x ``side`` adjacent patches a patch grid holds whole.

    ``index`` is patchify's ``{split}_index.npy`` (per patch ``[unit, y, x]``, its top-left corner),
    ``stride`` the patch stride. Returns (n_crops, side, side) int64 rows of ``index``: crop ``c``'s
    patch ``(i, j)`` is the one at ``(y + i * stride, x + j * stride)`` of the crop's unit. A crop
    exists where all its patches do (patches whose FOV share was too small are missing, so crops
    near the FOV's edge are dropped). Crops are ordered by (unit, y, x): the table is a pure
    function of the index.
    """
    index = np.asarray(index)
    if index.ndim != 2 or index.shape[1] != 3:
        raise InputError(
            f"patch index of shape {index.shape}, expected (N, 3) [unit, y, x]. Fix: rerun the patchify stage."
        )
    if side < 1 or stride < 1:
        raise InputError(f"crops of {side} x {side} patches at stride {stride}. Fix: use positive values.")
    row = {(int(u), int(y), int(x)): r for r, (u, y, x) in enumerate(index)}
    rows = []
    for u, y, x in sorted(row):
        cells = [row.get((u, y + i * stride, x + j * stride)) for i in range(side) for j in range(side)]
        if all(c is not None for c in cells):
            rows.append(cells)
    return np.asarray(rows, dtype=np.int64).reshape(-1, side, side)


def assemble_crop(patches: np.ndarray, cells: np.ndarray, stride: int) -> np.ndarray:
    """The (C, C, ch) image region covered by the patches ``cells`` ((side, side) rows of
    ``patches``, as :func:`crop_table` gives), C = patch size + (side - 1) x stride. Overlapping
    patches cut from one image agree where they overlap, so the crop is that region exactly."""
    side, p = cells.shape[0], patches.shape[1]
    c = p + (side - 1) * stride
    out = np.empty((c, c, *patches.shape[3:]), dtype=patches.dtype)
    for i in range(side):
        for j in range(side):
            out[i * stride : i * stride + p, j * stride : j * stride + p] = patches[cells[i, j]]
    return out


class UnpairedCrops(Dataset):
    """Unpaired samples of larger crops: item ``(i, j)`` is (degraded crop ``degraded_cells[j]``,
    clean crop ``clean_cells[i]``), each assembled from adjacent patches (:func:`assemble_crop`).
    Exact for the clean patches and for image-level corruptions (the degraded patches are cut from
    one degraded image); patch-level corruptions degrade each patch on its own and are refused by
    the caller."""

    def __init__(
        self, clean: np.ndarray, degraded: np.ndarray, clean_cells: np.ndarray, degraded_cells: np.ndarray, stride: int
    ) -> None:
        if pair_scale(clean, degraded) != 1:
            raise InputError("crops of adjacent patches are for same-size unpaired tasks. Fix: set crop_patches: 0.")
        if len(clean_cells) == 0 or len(degraded_cells) == 0:
            raise InputError(
                "no crop of adjacent patches lies whole in one domain's patches. "
                "Fix: lower crop_patches, or set it to 0."
            )
        self.clean, self.degraded, self.stride = clean, degraded, int(stride)
        self.clean_cells, self.degraded_cells = np.asarray(clean_cells), np.asarray(degraded_cells)

    def __len__(self) -> int:
        return max(len(self.clean_cells), len(self.degraded_cells))

    def __getitem__(self, ij: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        i, j = ij
        return (
            _to_tensor(assemble_crop(self.degraded, self.degraded_cells[j], self.stride)),
            _to_tensor(assemble_crop(self.clean, self.clean_cells[i], self.stride)),
        )


class StepBatchSampler(Sampler[list[int]]):
    """Endless batches whose content is a pure function of (seed, step, rank).

    Epoch ``e`` is a permutation drawn from ``seed`` and ``e``; step ``s`` takes the next slice of
    it. Because nothing depends on iterator state, a run resumed at step ``s`` draws exactly the
    batches an uninterrupted run draws, and each DDP rank takes its own share of every batch.
    ``stream`` separates independent samplers of one run (the two sides of unpaired data).
    """

    def __init__(self, n: int, batch_size: int, seed: int, stream: int | None = None) -> None:
        self.n, self.batch_size, self.seed, self.stream = n, batch_size, seed, stream
        self.start_step = lambda: 0
        self.rank, self.world = 0, 1

    def steps_per_epoch(self) -> int:
        return max(self.n // (self.batch_size * self.world), 1)

    def batch_at(self, step: int) -> list[int]:
        per_epoch = self.steps_per_epoch()
        epoch, k = divmod(step, per_epoch)
        words = [self.seed, epoch] if self.stream is None else [self.seed, self.stream, epoch]
        perm = np.random.default_rng(words).permutation(self.n)
        size = self.batch_size * self.world
        chunk = np.resize(perm, (per_epoch * size,))[k * size : (k + 1) * size]
        return chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        step = int(self.start_step())
        while True:
            yield self.batch_at(step)
            step += 1


class UnpairedStepSampler(StepBatchSampler):
    """Batches of (clean index, degraded index) pairs from two independent step samplers."""

    def __init__(self, n_clean: int, n_degraded: int, batch_size: int, seed: int) -> None:
        super().__init__(max(n_clean, n_degraded), batch_size, seed)
        self.clean = StepBatchSampler(n_clean, batch_size, seed, stream=1)
        self.degraded = StepBatchSampler(n_degraded, batch_size, seed, stream=2)

    def batch_at(self, step: int) -> list[tuple[int, int]]:  # type: ignore[override]
        for side in (self.clean, self.degraded):
            side.rank, side.world = self.rank, self.world
        return list(zip(self.clean.batch_at(step), self.degraded.batch_at(step)))


def fingerprint(cfg, arrays: list[np.ndarray]) -> str:
    """Identity of a training run: its config and the bytes of its data (for resume folders). The
    progress bar and the checkpoint interval change no result and are left out."""
    identity = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("progress_bar", "ckpt_every")}
    h = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
    for a in arrays:
        h.update(str(a.shape).encode())
        flat = np.asarray(a).reshape(-1)
        for i in range(0, flat.size, 1 << 26):
            h.update(np.ascontiguousarray(flat[i : i + (1 << 26)]).tobytes())
    return h.hexdigest()[:16]
