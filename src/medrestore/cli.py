"""The ``medrestore`` command.

    medrestore models [--json]                       list the registered models
    medrestore metrics IMAGE [REFERENCE] [--json]    every quality metric of one image
    medrestore restore --model NAME_OR_CHECKPOINT INPUT... --out DIR   restore your own images
    medrestore lineage FILE [--json]                 commit, DVC hashes, params and MLflow run behind FILE
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_models(args) -> int:
    from medrestore.models import BASELINES, MODELS, build_model, count_parameters

    rows = [
        {"name": n, "kind": "network", "task": s.task, "parameters": count_parameters(build_model(n)), "paper": s.paper}
        for n, s in MODELS.items()
    ]
    rows += [
        {"name": n, "kind": "baseline", "task": getattr(f, "task", "denoise"), "parameters": 0,
         "paper": getattr(f, "paper", None) or (f.__doc__ or "").strip().splitlines()[0]}
        for n, f in BASELINES.items()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['name']:<10} {r['kind']:<9} {r['task']:<9} {r['parameters']:>9,}  {r['paper']}")
    return 0


def _cmd_metrics(args) -> int:
    from medrestore.io import read_image, read_mask
    from medrestore.metrics import all_metrics

    image = read_image(args.image)
    reference = read_image(args.reference) if args.reference else None
    fov = None
    if args.fov:
        fov = read_mask(args.fov)
    scores = all_metrics(image, reference, fov, args.assets)
    if args.json:
        print(json.dumps(scores, indent=2, sort_keys=True))
    else:
        for k, v in sorted(scores.items()):
            print(f"{k:<12} {v:.4f}")
    return 0


def _cmd_restore(args) -> int:
    from medrestore.apply import restore_files

    device = "cpu" if args.cpu else None
    written, errors = restore_files(
        args.model, args.inputs, Path(args.out), fov=args.fov, tile=args.tile, overlap=args.overlap, device=device,
        precision=args.precision, progress=None if not args.no_progress else False,
    )
    for err in errors:
        print(f"error: {err}", file=sys.stderr)
    print(f"{len(written)} restored, {len(errors)} failed", file=sys.stderr)
    return 1 if errors else 0


def _cmd_lineage(args) -> int:
    from medrestore.lineage import format_lineage, lineage

    rec = lineage(args.path)
    print(json.dumps(rec, indent=2, sort_keys=True) if args.json else format_lineage(rec))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medrestore", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("models", help="list the registered models")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_cmd_models)
    p = sub.add_parser("metrics", help="every quality metric of one image")
    p.add_argument("image")
    p.add_argument("reference", nargs="?")
    p.add_argument("--fov", help="FOV mask image for the *_fov metrics")
    p.add_argument("--assets", default=None, help="folder with pyiqa's NIQE/BRISQUE parameter files")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_cmd_metrics)
    p = sub.add_parser("restore", help="restore images with a trained model")
    p.add_argument("--model", required=True, help="MODEL, TASK/MODEL (trained under artifacts/models), a model folder or its model.safetensors")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--fov", choices=("auto", "none"), default="auto", help="auto: restore only a detected fundus field of view")
    p.add_argument("--cpu", action="store_true", help="do not use a GPU even when there is one")
    p.add_argument("--precision", choices=("float32", "bf16"), default="float32",
                   help="bf16: autocast to bfloat16, faster on GPUs and on CPUs with bf16 units (see README, Performance)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=_cmd_restore)
    p = sub.add_parser("lineage", help="data, code, params, commit and MLflow run behind a pipeline output")
    p.add_argument("path", help="e.g. artifacts/models/denoise-g25/dncnn/model.safetensors")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_cmd_lineage)
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except Exception as exc:
        from medrestore.io import InputError

        if isinstance(exc, InputError):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())


