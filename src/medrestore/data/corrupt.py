"""The corrupt stage: degraded copies of the train/val patches and of the full-size test images.

A task spec (``corrupt.tasks.<task>`` in params.yaml)::

    train: {kind: ..., ...}        the corruption of the train and val patches
    test: {variant: {kind: ...}}   one degraded copy of every test image per variant
    level: patch | image           patch (default): each patch is degraded on its own;
                                   image: each whole train/val image (or region) is degraded once,
                                   inside its FOV, and the degraded patches are cut at exactly the
                                   positions patchify used (for the fundus degradations, which are
                                   defined on whole photographs)
    unpaired: false | true         true: the train images are split in two halves (seeded) and
                                   ``train_domain.npy`` says which half each patch belongs to
    photometric: {...}             optional, patch-level paired tasks: every clean TRAIN patch gets
                                   per-channel gains and gammas first (:mod:`medrestore.data.photometric`),
                                   written to ``train_clean.npy``, and is then degraded

Outputs under ``artifacts/corrupt/<task>/`` (the contract the trainer and the evaluator read):

``train.npy``, ``val.npy``
    uint8 (N, h, w, 3), row i the degraded form of row i of ``artifacts/patches/{split}.npy``.
    For super-resolution specs (scale s > 1) these are the low-resolution inputs, h = w = P / s;
    the high-resolution target of row i is the clean patch itself.
``{split}_params.jsonl``
    one JSON object per patch, in row order: ``{"seed_words": [...], "params": {...}}`` (plus
    ``"unit", "y", "x"`` for image-level tasks, where the params are those of the whole unit).
    ``corrupt(clean, spec, seed_words, fov)`` with them gives the same pixels again.
``train_clean.npy`` (tasks with ``photometric`` only)
    uint8 (N, P, P, 3): the augmented clean train patches, the training targets; ``train.npy`` row i
    is the degraded form of row i of this file (val stays unaugmented).
``train_domain.npy`` (unpaired tasks only)
    uint8 per train patch: 0 = use the patch only as a CLEAN sample, 1 = only as a DEGRADED one.
    The two halves come from different source images (different regions when all train units are
    regions of one image). Val and test stay paired, so full-reference metrics exist.
``test/<variant>/<id>.png``
    the degraded full-size test images (low-resolution for SR; their target is the top-left
    ``hr_box`` of the clean test image, see :func:`medrestore.degradations.sr_pair`).
``corruption.json``
    the specs, ``level``, ``scale``, ``unpaired``, the domains' source ids, per split the count and
    params file, and per test image its file, seed words and sampled params.

Seed words: a patch ``[seed, task, split, index]`` (:func:`patch_seed`), an image-level unit
``[seed, task, split, unit]`` with the unit's place in ``patches.json``'s ``units[split]``, a test
image ``[seed, task, 2, image, variant]``, the photometric augmentation of a train patch its patch's words
plus ``PHOTOMETRIC_WORD``. Any single one can be replayed without the others.

Grey data (``prepare.grey``: three equal channels): the corruption is applied to one channel and
copied to all three, so grey stays grey (noise drawn once per pixel, not per channel).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medrestore.core.io import (
    InputError,
    _json_default,
    atomic_path,
    read_image,
    read_json,
    read_mask,
    write_json_atomic,
    write_npy_atomic,
    write_png_atomic,
)
from medrestore.data.names import safe_name
from medrestore.data.patches import npy_writer, read_rows
from medrestore.data.photometric import augment_patch, check_photometric
from medrestore.degradations import corrupt, spec_scale, stable_id

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
TASK_KEYS = {"train", "test", "level", "unpaired", "photometric"}
LEVELS = ("patch", "image")
DOMAIN_WORD = 3  # the rng stream of the unpaired split: [seed, task, DOMAIN_WORD]
PHOTOMETRIC_WORD = 5  # the photometric augmentation of a train patch: patch_seed(...) + [PHOTOMETRIC_WORD]
CHUNK = 4096  # patches read and written per block


def patch_seed(seed: int, task: str, split: str, index: int) -> list[int]:
    return [int(seed), stable_id(task), SPLIT_IDS[split], int(index)]


def variant_seed(seed: int, task: str, image_index: int, variant_index: int) -> list[int]:
    return patch_seed(seed, task, "test", image_index) + [int(variant_index)]


def check_task_spec(task: str, spec: dict) -> dict:
    """The task spec with its defaults, or an :class:`InputError` naming the params entry."""
    where = f"params.yaml: corrupt.tasks.{task}"
    if not isinstance(spec, dict) or "train" not in spec or not isinstance(spec.get("test"), dict) or not spec["test"]:
        raise InputError(f"{where}: needs a `train` spec and a `test` mapping of variants. Fix: see the task table "
                         "in docs/pipeline.md.")
    unknown = set(spec) - TASK_KEYS
    if unknown:
        raise InputError(f"{where}: unknown keys {sorted(unknown)}. Fix: use only {sorted(TASK_KEYS)}.")
    level = spec.get("level", "patch")
    if level not in LEVELS:
        raise InputError(f"{where}.level is {level!r}. Fix: use patch or image.")
    unpaired = spec.get("unpaired", False)
    if not isinstance(unpaired, bool):
        raise InputError(f"{where}.unpaired is {unpaired!r}. Fix: use true or false.")
    try:
        scale = spec_scale(spec["train"])
        test_scales = {v: spec_scale(vs) for v, vs in spec["test"].items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{where}: a spec lacks a key ({exc}). Fix: give every downscale step its scale.") from exc
    odd = {v: s for v, s in test_scales.items() if s != scale}
    if odd:
        raise InputError(f"{where}: test variants {odd} change the size by another factor than train ({scale}). Fix: "
                         "use one scale per task.")
    photometric = None
    if spec.get("photometric") is not None:
        if level != "patch" or unpaired:
            raise InputError(f"{where}.photometric: only patch-level paired tasks are augmented. Fix: drop "
                             "photometric, or use level patch and unpaired false.")
        photometric = check_photometric(task, spec["photometric"])
    return {**spec, "level": level, "unpaired": unpaired, "scale": scale, "photometric": photometric}


def _apply(image: np.ndarray, spec: dict, words: list[int], fov, grey: bool, where: str):
    try:
        if grey:
            out, params = corrupt(image[..., 0], spec, words, fov)
            return np.repeat(out[..., None], 3, axis=2), params
        return corrupt(image, spec, words, fov)
    except (ValueError, TypeError, KeyError) as exc:
        raise InputError(f"params.yaml: {where}: {exc}. Fix: correct the spec (see the corruption table in "
                         "docs/pipeline.md).") from exc


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


@contextlib.contextmanager
def _jsonl_writer(dest: Path):
    with atomic_path(dest) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        yield lambda obj: fh.write(_dumps(obj) + "\n")


def read_params(path: Path) -> list[dict]:
    """The per-patch records of a ``{split}_params.jsonl`` file."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


class _Prepared:
    """The prepared images and FOV masks, one source image in memory at a time."""

    def __init__(self, prepared_dir: Path):
        self.dir = Path(prepared_dir)
        manifest = read_json(self.dir / "manifest.json")
        self.by_id = {e["id"]: e for e in manifest["images"]}
        self._key = None
        self._value = None

    def load(self, source_id: str, need_image: bool) -> tuple[np.ndarray | None, np.ndarray]:
        key = (source_id, need_image)
        if self._key != key:
            if source_id not in self.by_id:
                raise InputError(f"{self.dir / 'manifest.json'}: no image {source_id!r}. Fix: rerun `dvc repro "
                                 "patchify`.")
            entry = self.by_id[source_id]
            image = read_image(self.dir / entry["image"], "RGB") if need_image else None
            fov = read_mask(self.dir / entry["fov"])
            self._key, self._value = key, (image, fov)
        return self._value


def _unit_ranges(index: np.ndarray, n_units: int) -> list[tuple[int, int]]:
    """Row range of every unit: patchify writes each unit's patches contiguously, in unit order."""
    if len(index) and np.any(np.diff(index[:, 0]) < 0):
        raise InputError("artifacts/patches: the index is not in unit order. Fix: rerun `dvc repro patchify`.")
    starts = np.searchsorted(index[:, 0], np.arange(n_units + 1), side="left")
    return [(int(starts[k]), int(starts[k + 1])) for k in range(n_units)]


def unpaired_domains(units: list[dict], *, seed: int, task: str) -> dict:
    """Split the train units into a clean half and a degraded half, by source image when there are
    at least two, by region otherwise; seeded, so the split replays."""
    sources = sorted({u["source_id"] for u in units})
    by = "source" if len(sources) >= 2 else "region"
    keys = sources if by == "source" else sorted(u["id"] for u in units)
    if len(keys) < 2:
        raise InputError(
            "corrupt: an unpaired task needs at least two train images or regions. "
            "Fix: add images, or raise patchify.region_grid."
        )
    order = np.random.default_rng([int(seed), stable_id(task), DOMAIN_WORD]).permutation(len(keys))
    half = len(keys) // 2
    clean = sorted(keys[i] for i in order[:half])
    degraded = sorted(keys[i] for i in order[half:])
    return {"by": by, "clean": clean, "degraded": degraded}


def corrupt_task(patches_dir: Path, out_dir: Path, *, task: str, spec: dict, seed: int,
                 prepared_dir: Path | None = None) -> dict:
    """Write the outputs listed in the module docstring under ``out_dir``.

    ``prepared_dir`` (``artifacts/prepared``) gives the whole images and FOV masks: image-level
    tasks need it; patch-level tasks use it, when given, to pass each patch's FOV to the spec."""
    patches_dir, out_dir = Path(patches_dir), Path(out_dir)
    spec = check_task_spec(task, spec)
    meta = read_json(patches_dir / "patches.json")
    job = _job(patches_dir, out_dir, meta, task=task, spec=spec, seed=seed, prepared_dir=prepared_dir)
    record: dict = {
        "task": task, "seed": seed, "level": job.level, "scale": job.s, "unpaired": spec["unpaired"], "grey": job.grey,
        "train_spec": spec["train"], "test_specs": spec["test"], "patch_size": job.p, "lr_patch_size": job.p // job.s,
        "params_format": "one JSON object per patch: seed_words, params (and unit, y, x for level image)",
        "splits": {},
    }
    for split in ("train", "val"):
        n = _corrupt_split(job, meta, split)
        q = job.p // job.s
        record["splits"][split] = {"count": n, "params": f"{split}_params.jsonl", "shape": [n, q, q, 3]}
        if split == "train" and spec["photometric"]:
            record["splits"][split]["clean"] = "train_clean.npy"
            record["photometric"] = spec["photometric"]
    if spec["unpaired"]:
        record["domains"] = _write_domains(meta["units"]["train"], patches_dir, out_dir, seed=seed, task=task)
    record["test"] = _corrupt_tests(job, meta["test"])
    write_json_atomic(out_dir / "corruption.json", record)
    return record


@dataclass(frozen=True)
class _Job:
    """One task's inputs and settings: ``p`` the patch size, ``s`` the scale, ``spec`` checked."""

    patches_dir: Path
    out_dir: Path
    task: str
    spec: dict
    seed: int
    p: int
    s: int
    level: str
    grey: bool
    prepared: _Prepared | None


def _job(patches_dir: Path, out_dir: Path, meta: dict, *, task: str, spec: dict, seed: int,
         prepared_dir: Path | None) -> _Job:
    """The :class:`_Job` of a checked task spec, refusing patches it cannot use."""
    if "units" not in meta:
        raise InputError(f"{patches_dir / 'patches.json'}: written by an older version (no units). "
                         "Fix: rerun `dvc repro patchify`.")
    p, s, level, grey = int(meta["patch_size"]), spec["scale"], spec["level"], bool(meta.get("grey", False))
    if p % s:
        raise InputError(
            f"params.yaml: corrupt.tasks.{task} downscales by {s}, but patchify.patch_size ({p}) is not a multiple "
            f"of {s}. Fix: set patchify.patch_size to a multiple of {s}."
        )
    if level == "image" and prepared_dir is None:
        raise InputError(f"corrupt.tasks.{task}: level image needs the prepared images. Fix: pass prepared_dir.")
    prepared = _Prepared(prepared_dir) if prepared_dir is not None else None
    return _Job(patches_dir, out_dir, task, spec, seed, p, s, level, grey, prepared)


def _corrupt_split(job: _Job, meta: dict, split: str) -> int:
    """Write ``{split}.npy`` and ``{split}_params.jsonl`` (and, for an augmented train split,
    ``train_clean.npy``), unit by unit; returns the number of patches."""
    p, s = job.p, job.s
    units = meta["units"][split]
    index = np.load(job.patches_dir / f"{split}_index.npy")
    n = int(index.shape[0])
    if n != int(meta["counts"][split]):
        raise InputError(f"{job.patches_dir / f'{split}_index.npy'}: {n} rows, patches.json says "
                         f"{meta['counts'][split]}. Fix: rerun `dvc repro patchify`.")
    where = f"corrupt.tasks.{job.task}.train"
    photometric = job.spec["photometric"] if split == "train" else None
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(npy_writer(job.out_dir / f"{split}.npy", (n, p // s, p // s, 3)))
        put = stack.enter_context(_jsonl_writer(job.out_dir / f"{split}_params.jsonl"))
        clean_out = (stack.enter_context(npy_writer(job.out_dir / "train_clean.npy", (n, p, p, 3)))
                     if photometric else None)
        for k, (start, stop) in enumerate(_unit_ranges(index, len(units))):
            if stop == start:
                continue
            unit = units[k]
            if job.level == "image":
                out.write(_image_level(job.prepared, unit, index[start:stop], job.patches_dir / f"{split}.npy", start,
                                       job.spec["train"], patch_seed(job.seed, job.task, split, k), job.grey, s, p,
                                       where, put))
                continue
            fov = job.prepared.load(unit["source_id"], False)[1] if job.prepared is not None else None
            _patch_level(job, split, index, (start, stop), fov, photometric, out, put, clean_out)
    return n


def _patch_level(job: _Job, split: str, index: np.ndarray, rows: tuple[int, int], fov: np.ndarray | None,
                 photometric: dict | None, out, put, clean_out) -> None:
    """Degrade the patches ``rows`` (one unit's) each on its own, ``CHUNK`` at a time, augmenting
    them first when ``photometric`` is given; write the blocks and each patch's params record."""
    p, s, where = job.p, job.s, f"corrupt.tasks.{job.task}.train"
    start, stop = rows
    for a in range(start, stop, CHUNK):
        b = min(stop, a + CHUNK)
        clean = read_rows(job.patches_dir / f"{split}.npy", a, b)
        block = np.empty((b - a, p // s, p // s, 3), np.uint8)
        if photometric:
            clean = np.array(clean)
        for j in range(b - a):
            i = a + j
            _, y, x = index[i]
            words = patch_seed(job.seed, job.task, split, i)
            pf = None if fov is None else fov[y : y + p, x : x + p]
            extra = {}
            if photometric:
                clean[j], extra["photometric"] = augment_patch(clean[j], photometric, words + [PHOTOMETRIC_WORD], pf)
            block[j], params = _apply(clean[j], job.spec["train"], words, pf, job.grey, where)
            put({"seed_words": words, "params": params, **extra})
        out.write(block)
        if clean_out is not None:
            clean_out.write(clean)


def _write_domains(units: list[dict], patches_dir: Path, out_dir: Path, *, seed: int, task: str) -> dict:
    """Write ``train_domain.npy`` for an unpaired task; the record of its two halves."""
    domains = unpaired_domains(units, seed=seed, task=task)
    key = "source_id" if domains["by"] == "source" else "id"
    degraded_keys = set(domains["degraded"])
    unit_domain = np.array([u[key] in degraded_keys for u in units], dtype=np.uint8)
    index = np.load(patches_dir / "train_index.npy")
    domain = unit_domain[index[:, 0]] if len(units) else np.zeros(0, np.uint8)
    write_npy_atomic(out_dir / "train_domain.npy", domain.astype(np.uint8))
    domains["counts"] = {"clean": int((domain == 0).sum()), "degraded": int((domain == 1).sum())}
    domains["units"] = {"clean": sorted(u["id"] for u, d in zip(units, unit_domain) if d == 0),
                        "degraded": sorted(u["id"] for u, d in zip(units, unit_domain) if d == 1)}
    return domains


def _corrupt_tests(job: _Job, entries: list[dict]) -> list[dict]:
    """Write one degraded copy of every test image per test variant; their records."""
    tests = []
    for vi, (variant, vspec) in enumerate(sorted(job.spec["test"].items())):
        for ii, entry in enumerate(entries):
            clean = read_image(job.patches_dir / entry["image"], "RGB")
            fov = read_mask(job.patches_dir / entry["fov"])
            words = variant_seed(job.seed, job.task, ii, vi)
            degraded, params = _apply(clean, vspec, words, fov, job.grey, f"corrupt.tasks.{job.task}.test.{variant}")
            rel = f"test/{variant}/{safe_name(entry['id'])}.png"
            write_png_atomic(job.out_dir / rel, degraded)
            tests.append({
                "id": entry["id"], "variant": variant, "file": rel, "seed_words": words, "spec": vspec,
                "params": params, "fov": True, "hr_box": [0, degraded.shape[0] * job.s, 0, degraded.shape[1] * job.s],
            })
    return tests


def _image_level(prepared, unit, index, patches_path, start, spec, words, grey, s, p, where, put) -> np.ndarray:
    """Degrade one whole unit inside its FOV, then cut its patches where patchify cut them."""
    image, fov = prepared.load(unit["source_id"], True)
    t, b, l, r = unit["box"]
    region, mask = image[t:b, l:r], fov[t:b, l:r]
    ys, xs = index[:, 1] - t, index[:, 2] - l
    if s > 1 and (np.any(ys % s) or np.any(xs % s)):
        raise InputError(
            f"params.yaml: corrupt.tasks: an image-level task downscales by {s}, but patch corners of {unit['id']} "
            "are not "
            f"multiples of {s}. Fix: make patchify.stride and prepare.size / patchify.region_grid multiples of {s}."
        )
    # The patches must still be the prepared pixels they were cut from (stale outputs otherwise).
    first = read_rows(patches_path, start, start + 1)[0]
    if not np.array_equal(first, region[ys[0] : ys[0] + p, xs[0] : xs[0] + p]):
        raise InputError(f"artifacts/patches: patches of {unit['id']} differ from artifacts/prepared. Fix: rerun "
                         "`dvc repro patchify`.")
    degraded, params = _apply(region, spec, words, mask, grey, where)
    q = p // s
    block = np.empty((len(index), q, q, 3), np.uint8)
    for j, (y, x) in enumerate(zip(ys // s, xs // s)):
        block[j] = degraded[y : y + q, x : x + q]
        put({"seed_words": words, "params": params, "unit": unit["id"], "y": int(index[j, 1]), "x": int(index[j, 2])})
    return block
