"""Test-image scores of trained model folders, without the evaluate stage: PSNR inside the FOV (and
whole-image PSNR, SSIM) of each model on the pipeline's own test images of one task, restored as the
evaluate stage restores them (``evaluate.tile`` / ``overlap`` of params.yaml), with the corrupted
input scored beside them as a check that the numbers are the report's.

    .venv/bin/python benchmarks/score_models.py denoise-g25 MODEL_DIR [MODEL_DIR ...] [--variant s25] [--out r.json]

For measurements of training settings (benchmarks/learning.py --save MODEL_DIR) judged on the
report's own metric; nothing is written to the DVC outputs or to MLflow.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("task")
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--variant", default=None, help="test variant (default: every one)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    models_arg = {str(m): m.resolve() for m in args.models}  # named as given, loaded from where they are
    os.chdir(REPO)
    import numpy as np

    from medrestore.core.io import load_params, read_image, read_json, read_mask
    from medrestore.degradations import modcrop, to_float, to_uint8, upsample_bicubic
    from medrestore.evaluation.metrics import full_reference
    from medrestore.evaluation.scoring import task_scale
    from medrestore.models import load_model
    from medrestore.serving.inference import restore_array

    ev = load_params("evaluate")
    patches, corrupt = REPO / "artifacts/patches", REPO / "artifacts/corrupt" / args.task
    meta = read_json(patches / "patches.json")
    clean_by_id = {e["id"]: e for e in meta["test"]}
    corruption = read_json(corrupt / "corruption.json")
    models = {name: load_model(d)[0] for name, d in models_arg.items()}
    rows: dict[str, dict[str, list[dict]]] = {}
    for case in corruption["test"]:
        if args.variant and case["variant"] != args.variant:
            continue
        s = task_scale(corruption, case)
        entry = clean_by_id[case["id"]]
        clean = modcrop(read_image(patches / entry["image"], "RGB"), s)
        fov = modcrop(read_mask(patches / entry["fov"]), s)
        low = to_float(read_image(corrupt / case["file"], "RGB"))
        outputs = {"degraded": to_uint8(upsample_bicubic(low, s))}
        for name, model in models.items():
            outputs[name] = to_uint8(restore_array(model, low, tile=ev["tile"], overlap=ev["overlap"], scale=s))
        for name, image in outputs.items():
            scores = full_reference(image, clean, fov)
            rows.setdefault(case["variant"], {}).setdefault(name, []).append(
                {"image": case["id"], **{k: round(scores[k], 4) for k in ("psnr_fov", "psnr", "ssim")}})
    result = {variant: {name: {"mean": {k: round(float(np.mean([r[k] for r in rs])),
                                                 3) for k in ("psnr_fov", "psnr", "ssim")},
                               "images": rs} for name, rs in by_name.items()} for variant, by_name in rows.items()}
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(json.dumps({v: {n: r["mean"] for n, r in by.items()} for v, by in result.items()}, indent=1), file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
