"""The ``medrestore`` command.

    medrestore models [--json]                       list the registered models
    medrestore metrics IMAGE [REFERENCE] [--grey] [--json]   every quality metric of one image
    medrestore restore --model NAME_OR_CHECKPOINT INPUT... --out DIR   restore your own images
    medrestore lineage FILE [--json]                 commit, DVC hashes, params and MLflow run behind FILE
    medrestore verify [--committed REV] [--all]      this run's numbers against the published report
    medrestore check-params [--params FILE]          params.yaml against its schema, before `dvc repro` touches outputs
    medrestore sweep [--out FILE] [--rev REV]...     the vessel-term weight sweep (DVC experiments) into one file
    medrestore --version

`medrestore COMMAND --help` describes each command's options.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_models(args) -> int:
    from medrestore.core.catalog import rows as catalog_rows

    columns = ("name", "kind", "task", "parameters", "paper")
    # the registry's table without importing torch (medrestore.core.catalog)
    rows = [{c: r[c] for c in columns} for r in catalog_rows()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['name']:<10} {r['kind']:<9} {r['task']:<9} {r['parameters']:>9,}  {r['paper']}")
    return 0


#: Smallest image side ``metrics`` measures: SSIM's 11 px Gaussian window ("valid" filtering).
METRICS_MIN_SIDE = 11
#: NIQE fits its model to 96 x 96 px blocks (pyiqa's ``block_size``): smaller images have none.
NIQE_MIN_SIDE = 96


def _is_grey(image) -> bool:
    import numpy as np

    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))


def _check_metric_inputs(args, image, reference, fov) -> None:
    """Refuse, before any metric runs, the inputs whose numbers would be errors or nonsense."""
    from medrestore.core.io import InputError

    h, w = image.shape[:2]
    if min(h, w) < METRICS_MIN_SIDE:
        raise InputError(
            f"{args.image}: {w}x{h} pixels, smaller than {METRICS_MIN_SIDE}x{METRICS_MIN_SIDE} (SSIM's window); no "
            "quality metric means anything at that size. Fix: measure a larger image or crop."
        )
    if reference is not None:
        if reference.shape[:2] != image.shape[:2]:
            rh, rw = reference.shape[:2]
            raise InputError(
                f"{args.image} is {w}x{h} pixels but the reference {args.reference} is {rw}x{rh}: full-reference "
                "metrics compare pixel by pixel. Fix: pass the reference of this image at its size (a super-resolved "
                "output is compared with the clean image, not with the small degraded one), or crop both to one "
                "region."
            )
        grey_image, grey_reference = _is_grey(image), _is_grey(reference)
        if grey_image != grey_reference and not args.grey:
            grey, colour = (args.image, args.reference) if grey_image else (args.reference, args.image)
            raise InputError(
                f"{grey} is grey (its three channels are equal) and {colour} is in colour: the colour metrics (psnr, "
                "psnr_green, ssim_rgb) would measure the colour one of them lacks while the luminance ones (psnr_y, "
                "ssim) ignore it, so the numbers would contradict each other (SSIM near 1 beside a PSNR near 10 dB). "
                "Fix: compare like with like: pass --grey to measure both as grey levels, or use a reference of the "
                "same kind."
            )
    if fov is not None and fov.shape != image.shape[:2]:
        raise InputError(
            f"the FOV mask {args.fov} is {fov.shape[1]}x{fov.shape[0]} pixels, the image {w}x{h}. Fix: pass the mask "
            "of this image."
        )


def _no_reference_each(image, assets) -> tuple[dict[str, float], dict[str, str]]:
    """medrestore.evaluation.metrics.no_reference, one metric at a time (the same calls): a metric that is
    not defined for this image (too small, constant, NaN) is None with the reason, the others still count."""
    import math
    import os

    import numpy as np
    import torch

    from medrestore.evaluation import metrics

    h, w = image.shape[:2]
    flat = bool((image == image.reshape(-1, *image.shape[2:])[0]).all())
    scores, notes = {}, {}
    with torch.inference_mode():
        for name in metrics.NO_REFERENCE:
            if name == "niqe" and min(h, w) < NIQE_MIN_SIDE:
                scores[name], notes[name] = (
                    None,
                    f"not defined: NIQE needs at least {NIQE_MIN_SIDE}x{NIQE_MIN_SIDE} pixels (its block size), the "
                    f"image is {w}x{h}",
                )
                continue
            if name in ("niqe", "brisque") and flat:
                scores[name], notes[name] = (
                    None,
                    f"not defined: every pixel of the image is {image.reshape(-1, *image.shape[2:])[0].tolist()}; "
                    f"{name.upper()} fits statistics of local contrast, which a constant image has none of",
                )
                continue
            try:
                value = float(metrics.metric(name).compute(image, assets))
            except OSError as exc:  # urllib's URLError: pyiqa downloads a parameter file it finds nowhere
                from medrestore.core.io import InputError

                file = metrics.ASSET_FILES.get(name, "its parameter file")
                default_assets = (f"default {os.environ.get('MEDRESTORE_PYIQA_ASSETS', '../shared/assets/pyiqa')}, "
                                  "relative to this folder")
                raise InputError(
                    f"{name}: pyiqa's {file} is neither in its cache ({torch.hub.get_dir()}/pyiqa) nor in the assets "
                    f"folder ({assets or default_assets}), "
                    f"and downloading it failed ({type(exc).__name__}: {exc}). Fix: pass --assets FOLDER holding "
                    "niqe_modelparameters.mat and brisque_svm_weights.pth (e.g. the repository's "
                    "../shared/assets/pyiqa), or run once with network access."
                ) from None
            # torch's LinAlgError is a RuntimeError
            except (RuntimeError, ValueError, IndexError, AssertionError, np.linalg.LinAlgError) as exc:
                scores[name], notes[name] = (
                    None,
                    f"not defined: pyiqa's {name} fails on this image ({type(exc).__name__}: "
                    f"{' '.join(str(exc).split())[:160]})",
                )
                continue
            if math.isnan(value):
                scores[name], notes[name] = (
                    None,
                    f"not defined: pyiqa's {name} gives NaN for this image (too small or too flat for its statistics)",
                )
                continue
            scores[name] = value + 0.0  # -0.0 (entropy of a constant image) printed as 0
    return scores, notes


def _cmd_metrics(args) -> int:
    import math
    import warnings

    from medrestore.core.io import InputError, read_image, read_mask
    from medrestore.evaluation.metrics import full_reference

    if args.assets is not None and not Path(args.assets).is_dir():
        raise InputError(f"--assets {args.assets}: no such folder. Fix: pass the folder holding pyiqa's "
                         "niqe_modelparameters.mat and brisque_svm_weights.pth (e.g. the repository's "
                         "../shared/assets/pyiqa), or leave --assets out.")
    image = read_image(args.image)
    reference = read_image(args.reference) if args.reference else None
    fov = read_mask(args.fov) if args.fov else None
    _check_metric_inputs(args, image, reference, fov)
    if args.grey:
        image = read_image(args.image, "L")
        reference = read_image(args.reference, "L") if args.reference else None
    scores, notes = _no_reference_each(image, args.assets)
    if reference is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # mean of an empty FOV: NaN, explained below
            full = full_reference(image, reference, fov, args.assets, exact_psnr=True)
        for key, value in full.items():
            if math.isnan(value):
                full[key], notes[key] = (
                    None,
                    "not defined: the FOV mask selects no pixel" if key.endswith("_fov") else "not defined (NaN)",
                )
            elif math.isinf(value):
                what = "green channels" if "green" in key else "luma (Y) values" if "_y" in key else "pixels"
                notes[key] = f"infinite: zero error, the {what} of image and reference are identical" + (
                    " inside the FOV" if key.endswith("_fov") else ""
                )
            else:
                full[key] = value + 0.0
        scores.update(full)
    if args.json:
        print(json.dumps({k: (v if v is None or math.isfinite(v) else None) for k, v in scores.items()}, indent=2,
                         sort_keys=True, allow_nan=False))
        for key, note in sorted(notes.items()):
            print(f"note: {key} is null in the JSON: {note}", file=sys.stderr)
    else:
        for k, v in sorted(scores.items()):
            if v is None:
                print(f"{k:<14} {notes[k]}")
            else:
                print(f"{k:<14} {v:.4f}" + (f"  ({notes[k]})" if k in notes else ""))
    return 0


def _cmd_restore(args) -> int:
    from medrestore.serving.restore import restore_files

    device = "cpu" if args.cpu else None
    written, errors = restore_files(
        args.model, args.inputs, Path(args.out), fov=args.fov, tile=args.tile, overlap=args.overlap, device=device,
        precision=args.precision, progress=None if not args.no_progress else False, overwrite=args.overwrite,
    )
    for err in errors:
        print(f"error: {err}", file=sys.stderr)
    print(f"{len(written)} restored, {len(errors)} failed", file=sys.stderr)
    return 1 if errors else 0


def _cmd_lineage(args) -> int:
    from medrestore.tracking.lineage import format_lineage, lineage

    rec = lineage(args.path)
    print(json.dumps(rec, indent=2, sort_keys=True) if args.json else format_lineage(rec))
    return 1 if rec["matches_lock"] is False else 0  # a file changed since the stage wrote it


def _cmd_verify(args) -> int:
    from medrestore.experiments.verify import main as verify_main

    return verify_main([*(["--committed", args.committed] if args.committed else []), *(["--all"] if args.all else []),
                        *(["--json"] if args.json else [])])


def _cmd_check_params(args) -> int:
    from medrestore.core.io import load_params
    from medrestore.core.params import validate_params

    validate_params(load_params(path=args.params), args.params)
    print(f"{args.params}: valid")
    return 0


def _cmd_sweep(args) -> int:
    from medrestore.experiments.sweep import write_sweep

    if args.merge and args.replace:
        from medrestore.core.io import InputError

        raise InputError("--merge and --replace: one or the other. Fix: --merge keeps the points already in --out, "
                         "--replace drops them.")
    result = write_sweep(args.out, args.params, revs=args.rev, merge=args.merge, replace=args.replace)
    print(f"{args.out}: {len(result['points'])} points")
    for pt in result["points"]:
        print(f"  {pt['run']} weight {pt['weight']:g} [{pt['variant']}]: PSNR in FOV {pt['psnr_fov']:.2f} dB, "
              f"thin kept (independent) {pt.get('indep_thin_recall_above_chance', float('nan')):.3f}, "
              f"invented (independent) {pt.get('indep_invented_rate', float('nan')):.3f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``medrestore`` command line (every option with its help: tests/test_cli.py walks it)."""
    parser = argparse.ArgumentParser(prog="medrestore", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from importlib.metadata import version

    parser.add_argument("--version", action="version", version=f"medrestore {version('medrestore')}")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND", help="one of the commands above")
    p = sub.add_parser("models", help="list the registered models")
    p.add_argument("--json", action="store_true",
                   help="a JSON list (name, kind, task, parameters, paper) instead of the table")
    p.set_defaults(fn=_cmd_models)
    p = sub.add_parser("metrics", help="every quality metric of one image")
    p.add_argument("image", help="the image to measure (PNG, JPEG, TIFF, ...)")
    p.add_argument("reference", nargs="?",
                   help="its clean reference, same size: adds the full-reference metrics (PSNR, SSIM, ...)")
    p.add_argument("--fov", help="FOV mask image for the *_fov metrics")
    p.add_argument("--assets", default=None, help="folder with pyiqa's NIQE/BRISQUE parameter files")
    p.add_argument("--grey", action="store_true",
                   help="measure both images as grey levels (needed to compare a grey image with a colour one)")
    p.add_argument("--json", action="store_true",
                   help="JSON on stdout; a metric that is infinite (identical images) or not defined is null, the "
                        "reason on stderr")
    p.set_defaults(fn=_cmd_metrics)
    p = sub.add_parser("restore", help="restore images with a trained model")
    p.add_argument("--model", required=True,
                   help="MODEL, TASK/MODEL (trained under artifacts/models), a model folder or its model.safetensors, "
                        "or an MLflow model URI such as models:/medrestore-denoise-g25@champion")
    p.add_argument("inputs", nargs="+", help="images to restore (each written under --out with its own name)")
    p.add_argument("--out", required=True, help="folder for the restored images (created if missing)")
    p.add_argument("--tile", type=int, default=512,
                   help="tile side in input pixels (default 512); halved automatically when a tile runs out of memory")
    p.add_argument("--overlap", type=int, default=32,
                   help="context pixels around each tile (default 32, at least half the network's receptive field for "
                        "results equal to untiled restoration)")
    p.add_argument("--fov", choices=("none", "auto"), default="none",
                   help="none: restore the whole image, as the report's evaluation does (default); auto: keep the "
                        "input outside a detected fundus field of view (whole-image PSNR 5.4 dB lower on noisy "
                        "photographs)")
    p.add_argument("--cpu", action="store_true", help="do not use a GPU even when there is one")
    p.add_argument("--precision", choices=("float32", "bf16"), default="float32",
                   help="bf16: autocast to bfloat16, faster on GPUs and on CPUs with bf16 units (see README, "
                        "Performance)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--overwrite", action="store_true",
                   help="replace files of the same name already in --out (never an input)")
    p.set_defaults(fn=_cmd_restore)
    p = sub.add_parser("lineage", help="data, code, params, commit and MLflow run behind a pipeline output")
    p.add_argument("path", help="e.g. artifacts/models/denoise-g25/dncnn/model.safetensors")
    p.add_argument("--json", action="store_true", help="the lineage record as JSON instead of text")
    p.set_defaults(fn=_cmd_lineage)
    p = sub.add_parser("verify", help="after dvc repro: each published number of reports/metrics.json against this run")
    p.add_argument("--committed", default=None,
                   help="git revision (its reports/metrics.json) or a metrics.json file; default HEAD")
    p.add_argument("--all", action="store_true", help="list the identical numbers too")
    p.add_argument("--json", action="store_true", help="every compared number as JSON instead of text")
    p.set_defaults(fn=_cmd_verify)
    p = sub.add_parser("check-params",
                       help="check params.yaml (schema, ranges, duplicate keys) without running any stage")
    p.add_argument("--params", default="params.yaml", help="the params file to check (default params.yaml)")
    p.set_defaults(fn=_cmd_check_params)
    p = sub.add_parser("sweep",
                       help="collect the vessel-term weight sweep (DVC experiments) into reports/vessel_sweep.json")
    p.add_argument("--out", default="reports/vessel_sweep.json",
                   help="the sweep file written (default reports/vessel_sweep.json)")
    p.add_argument("--params", default="params.yaml",
                   help="the params file whose sweep settings apply (default params.yaml)")
    p.add_argument("--rev", action="append", default=None,
                   help="baseline commit whose experiments are collected (repeatable; default HEAD, as dvc exp show)")
    p.add_argument("--merge", action="store_true",
                   help="keep the points already in --out that this collection does not replace (experiments run in "
                        "another clone)")
    p.add_argument("--replace", action="store_true",
                   help="write only this collection even where --out holds points it lacks (without it, that is "
                        "refused)")
    p.set_defaults(fn=_cmd_sweep)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print(f"interrupted: medrestore {args.cmd} stopped; files already finished are complete, none is half-written.",
              file=sys.stderr)
        return 130
    except Exception as exc:
        from medrestore.core.io import InputError

        if isinstance(exc, InputError):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())


