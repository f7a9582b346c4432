"""The corrupt stage: degraded copies of the train/val patches and of the full-size test images.

Each patch and each test image gets its own seed words ``[seed, task, split, index(, variant)]``
so any single one can be replayed without the others, whatever order they are made in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medrestore.data.patches import load_patches
from medrestore.data.prepare import safe_name
from medrestore.degradations import corrupt, stable_id
from medrestore.io import atomic_path, read_image, read_json, write_json_atomic, write_npy_atomic, write_png_atomic

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


def patch_seed(seed: int, task: str, split: str, index: int) -> list[int]:
    return [int(seed), stable_id(task), SPLIT_IDS[split], int(index)]


def corrupt_task(patches_dir: Path, out_dir: Path, *, task: str, spec: dict, seed: int) -> dict:
    """Write ``train.npy``/``val.npy`` (degraded patches, aligned with the clean ones), their sampled
    parameters, ``test/<variant>/<image>.png`` and ``corruption.json``."""
    patches_dir, out_dir = Path(patches_dir), Path(out_dir)
    record: dict = {"task": task, "seed": seed, "train_spec": spec["train"], "test_specs": spec["test"], "splits": {}}
    for split in ("train", "val"):
        clean = load_patches(patches_dir, split)
        param_rows: list[dict] = []
        with atomic_path(out_dir / f"{split}.npy") as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=clean.shape)
            for i in range(clean.shape[0]):
                out[i], params = corrupt(np.asarray(clean[i]), spec["train"], patch_seed(seed, task, split, i))
                param_rows.append(params)
            out.flush()
            del out
        names = sorted(param_rows[0]) if param_rows else []
        table = np.array([[row[n] for n in names] for row in param_rows], dtype=np.float32).reshape(len(param_rows), len(names))
        write_npy_atomic(out_dir / f"{split}_params.npy", table)
        record["splits"][split] = {"count": int(clean.shape[0]), "param_names": names}

    meta = read_json(patches_dir / "patches.json")
    tests = []
    for vi, (variant, vspec) in enumerate(sorted(spec["test"].items())):
        for ii, entry in enumerate(meta["test"]):
            clean = read_image(patches_dir / entry["image"], "RGB")
            words = patch_seed(seed, task, "test", ii) + [vi]
            degraded, params = corrupt(clean, vspec, words)
            rel = f"test/{variant}/{safe_name(entry['id'])}.png"
            write_png_atomic(out_dir / rel, degraded)
            tests.append({"id": entry["id"], "variant": variant, "file": rel, "seed_words": words, "spec": vspec, "params": params})
    record["test"] = tests
    write_json_atomic(out_dir / "corruption.json", record)
    return record
