"""An evaluation with a broken model, from real CHASE_DB1 images (tests of the sanity gates:
tests/test_gates.py, test_report_policy.py, test_claims.py, test_targets.py, test_lineage.py).

Four CHASE_DB1 photographs prepared as the pipeline prepares them (96 px), degraded by the
``cataract`` corruption, then "restored" by:

- ``cyclegan-fc``: a red checkerboard (what a collapsed GAN outputs): far below its input;
- ``cyclegan``: halfway from the degraded image to the clean one (a model that learned something),
  or, with ``all_broken``, the inverted degraded image: below its input as well;
- ``median``: a classical baseline (3 x 3 median filter).

Every image is scored with the project's own metrics (:func:`medrestore.evaluation.metrics.full_reference`) and
summarised by the evaluation's :func:`medrestore.evaluation.scoring.summarise`; the trained models' curves
are flat over 8 validations, so they converged and only the gate can stop them.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from medrestore.core.io import read_image, write_json_atomic, write_png_atomic
from medrestore.data.fov import prepare_arrays
from medrestore.data.names import safe_name
from medrestore.data.sources import load_mask
from medrestore.degradations import corrupt
from medrestore.evaluation.metrics import full_reference
from medrestore.evaluation.scoring import per_image_table, summarise

STEMS = ("Image_01L", "Image_01R", "Image_02L", "Image_02R")
SIZE = 96
VARIANT = "cataract"
BROKEN = "cyclegan-fc"


def checkerboard(shape: tuple[int, ...], block: int = 8) -> np.ndarray:
    """A red checkerboard of ``shape`` (uint8 RGB)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros(shape, np.uint8)
    out[(yy // block + xx // block) % 2 == 0] = (255, 0, 0)
    return out


@functools.cache
def cases(chase_dir: Path) -> tuple[tuple[str, np.ndarray, np.ndarray, np.ndarray], ...]:
    """(image id, clean, fov, degraded) of the four test photographs."""
    out = []
    for i, stem in enumerate(STEMS):
        img, fov, _ = prepare_arrays(read_image(chase_dir / f"{stem}.jpg"), load_mask(chase_dir / f"{stem}_1stHO.png"),
                                     size=SIZE)
        degraded, _ = corrupt(img, {"kind": "cataract"}, [i], fov)
        out.append((f"chase_db1/{stem}", img, fov, degraded))
    return tuple(out)


def outputs(clean: np.ndarray, degraded: np.ndarray, all_broken: bool) -> dict[str, tuple[str, np.ndarray]]:
    """method -> (kind, image) for one test photograph."""
    half = ((degraded.astype(np.float32) + clean) / 2).round().astype(np.uint8)
    return {
        "degraded": ("input", degraded),
        "median": ("baseline", ndimage.median_filter(degraded, size=(3, 3, 1))),
        BROKEN: ("model", checkerboard(clean.shape)),
        "cyclegan": ("model", 255 - degraded if all_broken else half),
    }


@functools.cache
def scores(chase_dir: Path, index: int, method: str, all_broken: bool) -> dict[str, float]:
    """The project's full-reference metrics of one method's output on one photograph."""
    _, clean, fov, degraded = cases(chase_dir)[index]
    before = torch.get_num_threads()
    # the test machine's cores are shared with training runs: one thread is many times faster there
    torch.set_num_threads(1)
    try:
        return full_reference(outputs(clean, degraded, all_broken)[method][1], clean, fov)
    finally:
        torch.set_num_threads(before)


@functools.cache
def evaluation(chase_dir: Path, task: str = "enhance", all_broken: bool = False):
    """(per-image table, summary) as the evaluation writes them."""
    rows = []
    for i, (image_id, clean, _, degraded) in enumerate(cases(chase_dir)):
        for method, (kind, _) in outputs(clean, degraded, all_broken).items():
            rows.append({"task": task, "method": method, "kind": kind, "image_id": image_id, "variant": VARIANT,
                         "sigma": 0.0, "scale": 1,
                         **scores(chase_dir, i, method, all_broken and method == "cyclegan")})
    table = per_image_table(rows)
    return table, {"variants": [VARIANT], "methods": summarise(table, 0)}


def write_workspace(root: Path, chase_dir: Path, task: str = "enhance", all_broken: bool = False):
    """``root/eval/TASK`` (per_image.csv, summary.json, restored images), ``root/patches`` (the test
    images) and ``root/models/TASK/<model>`` (curves of 8 flat validations: converged). Returns
    (table, summary)."""
    table, summary = evaluation(chase_dir, task, all_broken)
    eval_dir = Path(root) / "eval" / task
    eval_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(eval_dir / "per_image.csv", index=False)
    write_json_atomic(eval_dir / "summary.json", summary)
    entries = []
    for image_id, clean, fov, degraded in cases(chase_dir):
        name = safe_name(image_id)
        write_png_atomic(Path(root) / "patches" / "test" / "images" / f"{name}.png", clean)
        write_png_atomic(Path(root) / "patches" / "test" / "fov" / f"{name}.png", fov.astype(np.uint8) * 255)
        entries.append({"id": image_id, "image": f"test/images/{name}.png", "fov": f"test/fov/{name}.png"})
        for method, (_, out) in outputs(clean, degraded, all_broken).items():
            write_png_atomic(eval_dir / "restored" / method / VARIANT / f"{name}.png", out)
    write_json_atomic(Path(root) / "patches" / "patches.json", {"test": entries})
    for model in (BROKEN, "cyclegan"):
        folder = Path(root) / "models" / task / model
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "curve.csv").write_text(
            "step,train_loss,lr,val_loss,val_psnr\n" + "".join(f"{10 * i},0.1,0.0002,0.1,15.0\n" for i in range(1, 9))
        )
        write_json_atomic(folder / "metrics.json", {"steps": 80, "best_val_psnr": 15.0})
    return table, summary
