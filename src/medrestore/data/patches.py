"""Train/val/test split by image and patch extraction into a few memory-mapped array files.

Splits never put two pieces of one image in different splits. With fewer than three source
images (the embedded single-image default) each image is cut into a grid of disjoint regions and
the regions are split instead; patches never cross a region's border.

Patch extraction runs in two passes (positions from the FOV masks, then pixels into an
``open_memmap`` array), so peak memory is one image, whatever the number of images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medrestore.data.prepare import safe_name
from medrestore.io import InputError, atomic_path, read_image, write_json_atomic, write_npy_atomic, write_png_atomic

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Unit:
    """A piece of a prepared image that belongs to exactly one split: the whole image or a region."""

    id: str
    source_id: str
    dataset: str
    box: tuple[int, int, int, int]  # top, bottom, left, right (half-open)


def split_units(manifest: dict, *, seed: int, val_fraction: float, test_fraction: float, region_grid: int) -> dict[str, list[Unit]]:
    images = manifest["images"]
    size = manifest["size"]
    units: list[Unit] = []
    if len(images) >= 3:
        units = [Unit(e["id"], e["id"], e["dataset"], (0, size, 0, size)) for e in images]
    else:
        step = size // region_grid
        for e in images:
            for r in range(region_grid):
                for c in range(region_grid):
                    box = (r * step, (r + 1) * step, c * step, (c + 1) * step)
                    units.append(Unit(f"{e['id']}#r{r}{c}", e["id"], e["dataset"], box))
    if len(units) < 3:
        raise InputError("patchify: fewer than 3 images or regions to split. Fix: raise patchify.region_grid or add images.")
    order = np.random.default_rng(seed).permutation(len(units))
    n_test = max(1, int(round(test_fraction * len(units))))
    n_val = max(1, int(round(val_fraction * len(units))))
    if n_test + n_val >= len(units):
        raise InputError("patchify: val_fraction + test_fraction leave no training images. Fix: lower them.")
    picked = [units[i] for i in order]
    return {"test": picked[:n_test], "val": picked[n_test : n_test + n_val], "train": picked[n_test + n_val :]}


def patch_positions(fov: np.ndarray, box, patch_size: int, stride: int, min_fov_fraction: float) -> np.ndarray:
    """Top-left corners (y, x) of patches inside ``box`` whose FOV share is at least ``min_fov_fraction``."""
    t, b, l, r = box
    sub = fov[t:b, l:r].astype(np.int64)
    if sub.shape[0] < patch_size or sub.shape[1] < patch_size:
        return np.zeros((0, 2), dtype=np.int32)
    integral = np.pad(sub.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    ys = np.arange(0, sub.shape[0] - patch_size + 1, stride)
    xs = np.arange(0, sub.shape[1] - patch_size + 1, stride)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    p = patch_size
    inside = integral[yy + p, xx + p] - integral[yy, xx + p] - integral[yy + p, xx] + integral[yy, xx]
    keep = inside >= min_fov_fraction * p * p
    return np.stack([yy[keep] + t, xx[keep] + l], axis=1).astype(np.int32)


def patchify(
    manifest: dict,
    prepared_dir: Path,
    out_dir: Path,
    *,
    seed: int,
    patch_size: int,
    stride: int,
    min_fov_fraction: float,
    val_fraction: float,
    test_fraction: float,
    region_grid: int,
) -> dict:
    prepared_dir, out_dir = Path(prepared_dir), Path(out_dir)
    by_id = {e["id"]: e for e in manifest["images"]}
    splits = split_units(
        manifest, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, region_grid=region_grid
    )
    fovs: dict[str, np.ndarray] = {}

    def fov_of(source_id: str) -> np.ndarray:
        if source_id not in fovs:
            fovs.clear()  # keep one mask in memory at a time
            fovs[source_id] = read_image(prepared_dir / by_id[source_id]["fov"], "L") > 127
        return fovs[source_id]

    summary: dict = {"patch_size": patch_size, "stride": stride, "splits": {}, "counts": {}}
    for split in ("train", "val"):
        units = sorted(splits[split], key=lambda u: u.id)
        positions = [patch_positions(fov_of(u.source_id), u.box, patch_size, stride, min_fov_fraction) for u in units]
        total = int(sum(len(p) for p in positions))
        if total == 0:
            raise InputError(
                f"patchify: no {patch_size}x{patch_size} patch fits inside the FOV of the {split} images. "
                "Fix: lower patchify.patch_size or patchify.min_fov_fraction."
            )
        index = np.zeros((total, 3), dtype=np.int32)
        with atomic_path(out_dir / f"{split}.npy") as tmp:
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(total, patch_size, patch_size, 3))
            k = 0
            for ui, (unit, pos) in enumerate(zip(units, positions)):
                if len(pos) == 0:
                    continue
                image = read_image(prepared_dir / by_id[unit.source_id]["image"], "RGB")
                for y, x in pos:
                    arr[k] = image[y : y + patch_size, x : x + patch_size]
                    k += 1
                index[k - len(pos) : k, 0] = ui
                index[k - len(pos) : k, 1:] = pos
            arr.flush()
            del arr
        write_npy_atomic(out_dir / f"{split}_index.npy", index)
        summary["splits"][split] = [u.id for u in units]
        summary["counts"][split] = total

    test_entries = []
    for unit in sorted(splits["test"], key=lambda u: u.id):
        src = by_id[unit.source_id]
        t, b, l, r = unit.box
        name = safe_name(unit.id)
        image = read_image(prepared_dir / src["image"], "RGB")[t:b, l:r]
        fov = read_image(prepared_dir / src["fov"], "L")[t:b, l:r]
        entry = {"id": unit.id, "source_id": unit.source_id, "dataset": unit.dataset, "box": list(unit.box),
                 "image": f"test/images/{name}.png", "fov": f"test/fov/{name}.png", "vessels": None}
        write_png_atomic(out_dir / entry["image"], image)
        write_png_atomic(out_dir / entry["fov"], fov)
        if src.get("vessels"):
            entry["vessels"] = f"test/vessels/{name}.png"
            write_png_atomic(out_dir / entry["vessels"], read_image(prepared_dir / src["vessels"], "L")[t:b, l:r])
        test_entries.append(entry)
    summary["splits"]["test"] = [e["id"] for e in test_entries]
    summary["counts"]["test"] = len(test_entries)
    summary["test"] = test_entries
    _assert_disjoint(summary["splits"], splits)
    write_json_atomic(out_dir / "patches.json", summary)
    return summary


def _assert_disjoint(names: dict[str, list[str]], splits: dict[str, list[Unit]]) -> None:
    seen: dict[str, str] = {}
    for split, units in splits.items():
        for u in units:
            key = u.source_id if u.id == u.source_id else u.id
            if key in seen and seen[key] != split:
                raise AssertionError(f"{key} is in both {seen[key]} and {split}")
            seen[key] = split


def load_patches(out_dir: Path, split: str) -> np.ndarray:
    """Memory-mapped patches of one split (N, P, P, 3) uint8."""
    path = Path(out_dir) / f"{split}.npy"
    if not path.is_file():
        raise InputError(f"{path}: missing. Fix: run `dvc repro patchify`.")
    return np.load(path, mmap_mode="r")


