"""Train/val/test split by image and patch extraction into a few memory-mapped array files.

Splits never put two pieces of one image in different splits. With fewer than three source
images (the embedded single-image default) each image is cut into a grid of disjoint regions and
the regions are split instead; patches never cross a region's border.

Patch extraction runs in two passes: positions from the FOV masks, then the pixels, streamed
image by image into the ``.npy`` file with plain writes (:class:`NpyRowWriter`). Peak memory is
one image and its patches, whatever the number of images (``benchmarks/patchify_bench.py``
measures it); a memory map would keep every written page resident until the end.

``patches.json`` lists each split's units (``units[split][k]``: id, source image, dataset and box)
and ``{split}_index.npy`` holds, per patch, ``[k, y, x]``: its unit and its top-left corner in the
prepared image; ``{split}_fov.npy`` (N, P, P) uint8 the patch's FOV mask (1 inside), for a loss
counted inside the FOV as the evaluation is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from medrestore.core.io import (
    InputError,
    atomic_path,
    read_image,
    read_mask,
    write_json_atomic,
    write_npy_atomic,
    write_png_atomic,
)
from medrestore.data.names import safe_name

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Unit:
    """A piece of a prepared image that belongs to exactly one split: the whole image or a region."""

    id: str
    source_id: str
    dataset: str
    box: tuple[int, int, int, int]  # top, bottom, left, right (half-open)


def standard_test_subjects(images: list[dict]) -> set[str]:
    """The subjects of ``images`` that their dataset's published split puts in the test set."""
    from medrestore.data.sources import DATASETS

    published = {s for e in images if e["dataset"] in DATASETS for s in DATASETS[e["dataset"]].test_subjects}
    return {e.get("subject") or e["id"] for e in images} & published


def split_units(manifest: dict, *, seed: int, val_fraction: float, test_fraction: float, region_grid: int,
                split: str = "random") -> dict[str, list[Unit]]:
    """Units of each split. Whole images are split by subject (both eyes of one person together).

    ``split``: ``random`` draws the test and validation subjects with ``seed``; ``standard`` keeps the
    published split of every dataset that has one (its ``test_subjects``, e.g. CHASE_DB1 11L-14R) and
    draws only the validation subjects, from that dataset's training subjects; images of datasets
    without a published split are split as ``random`` would.
    """
    if split not in ("random", "standard"):
        raise InputError(f"params.yaml: patchify.split is {split!r}. Fix: use 'standard' or 'random'.")
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
        raise InputError("patchify: fewer than 3 images or regions to split. Fix: raise patchify.region_grid or add "
                         "images.")
    # Whole-image splits are by subject (CHASE_DB1 has both eyes of each child): the two eyes of one
    # person are alike, so one in training and the other in test would flatter every score.
    subject = {e["id"]: e.get("subject") or e["id"] for e in images}
    key = (lambda u: subject[u.source_id]) if len(images) >= 3 else (lambda u: u.id)
    groups: dict[str, list[Unit]] = {}
    for u in sorted(units, key=lambda u: u.id):
        groups.setdefault(key(u), []).append(u)
    names = sorted(groups)
    if len(names) < 3:
        raise InputError("patchify: fewer than 3 subjects to split. Fix: add images of more subjects.")
    pick = lambda part: [u for name in part for u in groups[name]]  # noqa: E731
    fixed_test = standard_test_subjects(images) if split == "standard" and len(images) >= 3 else set()
    out: dict[str, list[Unit]] = {"test": [], "val": [], "train": []}
    if fixed_test:
        # the published split: its test subjects as given, validation subjects drawn from the rest of
        # the same datasets; the other datasets' subjects go through the random split below
        datasets = {groups[n][0].dataset for n in fixed_test}
        own = [n for n in names if groups[n][0].dataset in datasets and n not in fixed_test]
        if len(own) < 2:
            raise InputError("patchify: the published split leaves fewer than 2 training subjects. Fix: add that "
                             "dataset's training images.")
        order = np.random.default_rng(seed).permutation(len(own))
        n_val = min(len(own) - 1, max(1, int(round(val_fraction * len(own)))))
        out["test"] = pick(sorted(fixed_test))
        out["val"] = pick([own[i] for i in order[:n_val]])
        out["train"] = pick([own[i] for i in order[n_val:]])
        names = [n for n in names if groups[n][0].dataset not in datasets]
        if not names:
            return out
    order = np.random.default_rng(seed).permutation(len(names))
    least = 0 if fixed_test else 1
    n_test = max(least, int(round(test_fraction * len(names))))
    n_val = max(least, int(round(val_fraction * len(names))))
    if n_test + n_val >= len(names) and not fixed_test:
        raise InputError("patchify: val_fraction + test_fraction leave no training images. Fix: lower them.")
    rest = [names[i] for i in order]
    out["test"] += pick(rest[:n_test])
    out["val"] += pick(rest[n_test : n_test + n_val])
    out["train"] += pick(rest[n_test + n_val :])
    return out


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


class NpyRowWriter:
    """Write a ``.npy`` array of known shape row block by row block to an open binary file."""

    def __init__(self, fh, shape: tuple[int, ...], dtype=np.uint8):
        self.fh, self.shape, self.dtype = fh, tuple(int(n) for n in shape), np.dtype(dtype)
        self.rows = 0
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        np.lib.format.write_array_header_1_0(fh, header)

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.shape[1:] or self.rows + block.shape[0] > self.shape[0]:
            raise ValueError(f"block of shape {block.shape} does not fit rows {self.rows}.. of {self.shape}")
        self.fh.write(block.data)
        self.rows += block.shape[0]


@contextlib.contextmanager
def npy_writer(dest: Path, shape: tuple[int, ...], dtype=np.uint8) -> Iterator[NpyRowWriter]:
    """An atomically written ``.npy`` file filled block by block; every row must be written."""
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as fh:
            writer = NpyRowWriter(fh, shape, dtype)
            yield writer
        if writer.rows != writer.shape[0]:
            raise AssertionError(f"{dest}: wrote {writer.rows} rows of {writer.shape[0]}")


def read_rows(path: Path, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of a C-ordered ``.npy`` file, read with plain file reads (no memory map,
    so nothing stays resident after the caller drops the block)."""
    path = Path(path)
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(fh)
        if fortran:
            raise InputError(f"{path}: stored in Fortran order. Fix: rerun the stage that wrote it.")
        start, stop = max(0, int(start)), min(int(stop), shape[0])
        row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        fh.seek(fh.tell() + start * row)
        data = fh.read(max(0, stop - start) * row)
    if len(data) != max(0, stop - start) * row:
        raise InputError(f"{path}: truncated. Fix: rerun the stage that wrote it (`dvc repro --force`).")
    return np.frombuffer(data, dtype=dtype).reshape((max(0, stop - start), *shape[1:])).copy()


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
    split: str = "random",
) -> dict:
    """Split the prepared images (:func:`split_units`) and write the outputs the module docstring
    lists under ``out_dir``: the train/val patches, their FOV masks and index, the test units as
    PNGs and ``patches.json`` (returned)."""
    prepared_dir, out_dir = Path(prepared_dir), Path(out_dir)
    by_id = {e["id"]: e for e in manifest["images"]}
    splits = split_units(
        manifest, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, region_grid=region_grid,
        split=split,
    )
    fov_of = _FovCache(prepared_dir, by_id)
    _check_patch_params(manifest, prepared_dir, patch_size, stride)
    summary: dict = {"split": split, "patch_size": patch_size, "stride": stride, "size": manifest["size"],
                     "grey": bool(manifest.get("grey", False)), "splits": {}, "counts": {}, "units": {}}
    for name in ("train", "val"):
        units = sorted(splits[name], key=lambda u: u.id)
        total = _write_patch_split(name, units, manifest, prepared_dir, out_dir, fov_of, patch_size=patch_size,
                                   stride=stride, min_fov_fraction=min_fov_fraction)
        summary["splits"][name] = [u.id for u in units]
        summary["units"][name] = [_unit_dict(u) for u in units]
        summary["counts"][name] = total

    test_entries = _write_test_units(sorted(splits["test"], key=lambda u: u.id), by_id, prepared_dir, out_dir)
    summary["units"]["test"] = [_unit_dict(u) for u in sorted(splits["test"], key=lambda u: u.id)]
    summary["splits"]["test"] = [e["id"] for e in test_entries]
    summary["counts"]["test"] = len(test_entries)
    summary["test"] = test_entries
    summary["subjects"] = _split_subjects(manifest, splits, test_entries)
    _assert_disjoint(summary["splits"], splits)
    _assert_subjects_disjoint(summary["subjects"])
    write_json_atomic(out_dir / "patches.json", summary)
    return summary


class _FovCache:
    """The prepared FOV mask of a source image, one mask in memory at a time."""

    def __init__(self, prepared_dir: Path, by_id: dict[str, dict]):
        self.prepared_dir, self.by_id = prepared_dir, by_id
        self.fovs: dict[str, np.ndarray] = {}

    def __call__(self, source_id: str) -> np.ndarray:
        if source_id not in self.fovs:
            self.fovs.clear()  # keep one mask in memory at a time
            self.fovs[source_id] = read_mask(self.prepared_dir / self.by_id[source_id]["fov"])
        return self.fovs[source_id]


def _check_patch_params(manifest: dict, prepared_dir: Path, patch_size: int, stride: int) -> None:
    """Refuse a patch larger than the prepared images and a stride below 1."""
    if int(patch_size) > int(manifest["size"]):
        first = prepared_dir / manifest["images"][0]["image"]
        raise InputError(
            f"{first}: the prepared images are {manifest['size']}x{manifest['size']}, smaller than a "
            f"{patch_size}x{patch_size} patch. Fix: lower patchify.patch_size or raise prepare.size."
        )
    if int(stride) < 1:
        raise InputError(f"params.yaml: patchify.stride is {stride}. Fix: use a positive stride.")


def _write_patch_split(split: str, units: list[Unit], manifest: dict, prepared_dir: Path, out_dir: Path,
                       fov_of: _FovCache, *, patch_size: int, stride: int, min_fov_fraction: float) -> int:
    """Write ``{split}.npy``, ``{split}_fov.npy`` and ``{split}_index.npy`` for ``units`` (sorted by
    id), streamed image by image; returns the number of patches."""
    by_id = fov_of.by_id
    positions = [patch_positions(fov_of(u.source_id), u.box, patch_size, stride, min_fov_fraction) for u in units]
    total = int(sum(len(p) for p in positions))
    if total == 0:
        raise InputError(
            f"patchify: no {patch_size}x{patch_size} patch fits inside the FOV of the {split} images. "
            "Fix: lower patchify.patch_size or patchify.min_fov_fraction."
        )
    index = np.zeros((total, 3), dtype=np.int32)
    with npy_writer(out_dir / f"{split}.npy", (total, patch_size, patch_size, 3)) as out, \
            npy_writer(out_dir / f"{split}_fov.npy", (total, patch_size, patch_size)) as fov_out:
        k = 0
        for ui, (unit, pos) in enumerate(zip(units, positions)):
            if len(pos) == 0:
                continue
            fov_out.write(_cut(fov_of(unit.source_id)[..., None].astype(np.uint8), pos, patch_size)[..., 0])
            path = prepared_dir / by_id[unit.source_id]["image"]
            image = read_image(path, "RGB")
            if image.shape[:2] != (manifest["size"], manifest["size"]):
                raise InputError(
                    f"{path}: {image.shape[1]}x{image.shape[0]}, not the {manifest['size']}x{manifest['size']} "
                    "its manifest says. Fix: rerun `dvc repro prepare`."
                )
            out.write(_cut(image, pos, patch_size))
            index[k : k + len(pos), 0] = ui
            index[k : k + len(pos), 1:] = pos
            k += len(pos)
    write_npy_atomic(out_dir / f"{split}_index.npy", index)
    return total


def _write_test_units(units: list[Unit], by_id: dict[str, dict], prepared_dir: Path, out_dir: Path) -> list[dict]:
    """Write each test unit's image, FOV and vessel masks as PNGs under ``out_dir/test``; their entries."""
    test_entries = []
    for unit in units:
        src = by_id[unit.source_id]
        t, b, l, r = unit.box
        name = safe_name(unit.id)
        image = read_image(prepared_dir / src["image"], "RGB")[t:b, l:r]
        fov = read_image(prepared_dir / src["fov"], "L")[t:b, l:r]
        entry = {"id": unit.id, "source_id": unit.source_id, "dataset": unit.dataset, "box": list(unit.box),
                 "image": f"test/images/{name}.png", "fov": f"test/fov/{name}.png",
                 "fov_source": src.get("fov_source", "detected"), "vessels": None, "vessels_2nd": None}
        write_png_atomic(out_dir / entry["image"], image)
        write_png_atomic(out_dir / entry["fov"], fov)
        for key in ("vessels", "vessels_2nd"):
            if src.get(key):
                entry[key] = f"test/{key}/{name}.png"
                write_png_atomic(out_dir / entry[key], read_image(prepared_dir / src[key], "L")[t:b, l:r])
        test_entries.append(entry)
    return test_entries


def _split_subjects(manifest: dict, splits: dict[str, list[Unit]], test_entries: list[dict]) -> dict | None:
    """Each split's subjects (None for region splits of fewer than 3 images); sets each test entry's
    ``subject`` (its own id for region splits)."""
    subject = {e["id"]: e.get("subject") or e["id"] for e in manifest["images"]}
    subjects = ({k: sorted({subject[u.source_id] for u in v}) for k, v in splits.items()}
                if len(manifest["images"]) >= 3 else None)
    for e in test_entries:  # the evaluation's statistics resample subjects: both eyes of one person together
        e["subject"] = subject[e["source_id"]] if subjects else e["id"]
    return subjects


def _assert_subjects_disjoint(subjects: dict[str, list[str]] | None) -> None:
    if subjects:
        for a in SPLITS:
            for b in SPLITS:
                if a < b and set(subjects[a]) & set(subjects[b]):
                    raise AssertionError(f"subjects in both {a} and {b}: {sorted(set(subjects[a]) & set(subjects[b]))}")


def _cut(image: np.ndarray, pos: np.ndarray, patch_size: int) -> np.ndarray:
    """The patches of one image at ``pos`` (k x 2 top-left corners), as one k x P x P x C block."""
    windows = np.lib.stride_tricks.sliding_window_view(image, (patch_size, patch_size), axis=(0, 1))
    # windows[y, x] is C x P x P: move the channel axis back to the end.
    return np.moveaxis(windows[pos[:, 0], pos[:, 1]], 1, -1)


def _unit_dict(unit: Unit) -> dict:
    d = asdict(unit)
    d["box"] = list(unit.box)
    return d


def _assert_disjoint(names: dict[str, list[str]], splits: dict[str, list[Unit]]) -> None:
    seen: dict[str, str] = {}
    for split, units in splits.items():
        for u in units:
            key = u.source_id if u.id == u.source_id else u.id
            if key in seen and seen[key] != split:
                raise AssertionError(f"{key} is in both {seen[key]} and {split}")
            seen[key] = split


def load_fov(out_dir: Path, split: str) -> np.ndarray:
    """Memory-mapped FOV masks of one split's patches (N, P, P) uint8, 1 inside the FOV."""
    path = Path(out_dir) / f"{split}_fov.npy"
    if not path.is_file():
        raise InputError(f"{path}: missing (patches cut before FOV masks were stored). Fix: rerun `dvc repro "
                         "patchify`.")
    return np.load(path, mmap_mode="r")


def load_patches(out_dir: Path, split: str) -> np.ndarray:
    """Memory-mapped patches of one split (N, P, P, 3) uint8."""
    path = Path(out_dir) / f"{split}.npy"
    if not path.is_file():
        raise InputError(f"{path}: missing. Fix: run `dvc repro patchify`.")
    return np.load(path, mmap_mode="r")


