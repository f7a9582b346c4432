"""The published comparison: ``reports/report.md``, a self-contained ``reports/index.html``,
``reports/metrics.json`` (read by ``dvc metrics show``) and the figures they show."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from medrestore.claims import RULE, check_claims, claims_rows
from medrestore.data.prepare import safe_name
from medrestore.io import (
    read_image,
    read_json,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from medrestore.metrics import LOWER_IS_BETTER

IMAGE_METRICS = ("psnr", "psnr_fov", "psnr_green", "ssim", "ssim_fov", "niqe", "brisque", "entropy")
VESSEL_METRICS = ("auc", "dice", "thin_recall_above_chance", "invented_rate")
TABLE_METRICS = IMAGE_METRICS + tuple(f"ref_{k}" for k in VESSEL_METRICS)  # manual_* replace ref_* where masks exist
HEADERS = {
    **{f"{p}_auc": f"vessel AUC ({w})" for p, w in (("ref", "vs clean"), ("manual", "vs manual"))},
    **{f"{p}_dice": f"vessel Dice ({w})" for p, w in (("ref", "vs clean"), ("manual", "vs manual"))},
    **{f"{p}_thin_recall_above_chance": f"thin vessels kept ({w})" for p, w in (("ref", "vs clean"), ("manual", "vs manual"))},
    **{f"{p}_invented_rate": f"vessels invented ({w})" for p, w in (("ref", "vs clean"), ("manual", "vs manual"))},
}
LOWER_BETTER = LOWER_IS_BETTER | {"ref_invented_rate", "manual_invented_rate"}


def table_metrics(summary: dict, variant: str) -> tuple[str, ...]:
    """The image metrics, then the vessel scores against the manual masks when the test images have
    them (the clinical reference), else against the segmentation of the clean image."""
    has_manual = any("manual_auc" in v.get(variant, {}) for v in summary["methods"].values())
    prefix = "manual" if has_manual else "ref"
    return IMAGE_METRICS + tuple(f"{prefix}_{k}" for k in VESSEL_METRICS)
KIND_ORDER = {"reference": 0, "input": 1, "baseline": 2, "model": 3}


def _fig_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _detail_window(clean: np.ndarray, fov: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left of the ``size`` window inside the FOV with the most green-channel detail (vessels)."""
    g = clean[..., 1].astype(np.float32)
    energy = np.abs(np.diff(g, axis=0, prepend=g[:1])) + np.abs(np.diff(g, axis=1, prepend=g[:, :1]))
    energy[~fov] = 0
    best, pos = -1.0, (0, 0)
    h, w = g.shape
    step = max(size // 4, 1)
    for t in range(0, max(h - size, 0) + 1, step):
        for l in range(0, max(w - size, 0) + 1, step):
            if fov[t : t + size, l : l + size].mean() < 0.95:
                continue
            e = float(energy[t : t + size, l : l + size].sum())
            if e > best:
                best, pos = e, (t, l)
    return pos


def _methods(summary: dict) -> list[str]:
    return ["degraded"] + sorted(m for m in summary["methods"] if m not in ("degraded", "clean"))


def _restored(eval_dir: Path, method: str, variant: str, entry: dict) -> np.ndarray:
    return read_image(eval_dir / "restored" / method / variant / f"{safe_name(entry['id'])}.png", "RGB")


def _as_clean_size(img: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Low-resolution inputs of super-resolution tasks shown at the clean image's size (nearest)."""
    if img.shape[:2] == tuple(shape[:2]):
        return img
    ys = (np.arange(shape[0]) * img.shape[0] // shape[0]).clip(0, img.shape[0] - 1)
    xs = (np.arange(shape[1]) * img.shape[1] // shape[1]).clip(0, img.shape[1] - 1)
    return img[ys][:, xs]


def _test_case(patches_dir: Path, window: int) -> tuple[dict, np.ndarray, np.ndarray, tuple[int, int], int]:
    meta = read_json(patches_dir / "patches.json")
    entry = meta["test"][0]
    clean = read_image(patches_dir / entry["image"], "RGB")
    fov = read_image(patches_dir / entry["fov"], "L") > 127
    w = min(window, *clean.shape[:2])
    return entry, clean, fov, _detail_window(clean, fov, w), w


def crops_figure(task: str, eval_dir: Path, patches_dir: Path, summary: dict, window: int = 128, converged: dict[str, dict] | None = None) -> bytes:
    """Qualitative grid: the whole test image with the zoom window marked, then the zoomed window
    (the green-channel detail densest, i.e. thin vessels) for the clean image and every method."""
    from matplotlib.patches import Rectangle

    entry, clean, _fov, (t, l), w = _test_case(patches_dir, window)
    methods = _methods(summary)
    variants = summary["variants"]
    fig, axes = plt.subplots(len(variants), len(methods) + 2, figsize=(2.0 * (len(methods) + 2), 2.15 * len(variants)), squeeze=False)
    for r, variant in enumerate(variants):
        ax = axes[r][0]
        ax.imshow(clean)
        ax.add_patch(Rectangle((l, t), w, w, fill=False, edgecolor="yellow", linewidth=1.5))
        ax.set_title("test image" + (f"  [{variant}]" if len(variants) > 1 else ""), fontsize=8)
        ax.axis("off")
        panels = [("clean", clean)] + [(m, _as_clean_size(_restored(eval_dir, m, variant, entry), clean.shape)) for m in methods]
        for c, (name, img) in enumerate(panels, start=1):
            ax = axes[r][c]
            ax.imshow(img[t : t + w, l : l + w], interpolation="nearest")
            stats = summary["methods"].get(name, {}).get(variant, {})
            title = label(name, converged).replace(" (", "\n(")
            title = title if "psnr" not in stats else f"{title}\n{stats['psnr']['mean']:.2f} dB"
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.suptitle(f"{task}: {entry['id']}, {w}x{w} zoom at ({t}, {l})", fontsize=9, y=1.02)
    return _fig_png(fig)


def error_maps_figure(task: str, eval_dir: Path, patches_dir: Path, summary: dict, window: int = 128) -> bytes:
    """Per-channel absolute error against the clean image in the zoom window (Hayee2017's figure 3),
    for the hardest test corruption: rows are methods, columns R, G, B; one colour scale for all."""
    entry, clean, _, (t, l), w = _test_case(patches_dir, window)
    variant = summary["variants"][-1]
    methods = _methods(summary)
    ref = clean[t : t + w, l : l + w].astype(np.float32)
    errs = {m: np.abs(_as_clean_size(_restored(eval_dir, m, variant, entry), clean.shape)[t : t + w, l : l + w].astype(np.float32) - ref) for m in methods}
    vmax = max(float(np.percentile(e, 99)) for e in errs.values()) or 1.0
    fig, axes = plt.subplots(len(methods), 3, figsize=(7.0, 2.0 * len(methods)), squeeze=False)
    for r, m in enumerate(methods):
        for c, ch in enumerate("RGB"):
            ax = axes[r][c]
            im = ax.imshow(errs[m][..., c], cmap="inferno", vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_title(f"{m}, {ch}: mean {errs[m][..., c].mean():.1f}", fontsize=7)
            ax.axis("off")
    fig.colorbar(im, ax=axes, shrink=0.6, label="absolute error (0-255)")
    fig.suptitle(f"{task} [{variant}]: per-channel error, {entry['id']}", fontsize=9)
    return _fig_png(fig)


def vessel_figure(task: str, eval_dir: Path, patches_dir: Path, summary: dict, segmenter, window: int = 192, converged: dict[str, dict] | None = None) -> bytes:
    """The pipeline's vessel segmenter on every method's output in the zoom window: vessels of the
    reference found (white), missed (magenta) and invented (more than 2 px from any reference
    vessel, cyan). The reference is the manual mask when the dataset has one, else the segmentation
    of the clean image."""
    from scipy import ndimage

    entry, clean, fov, (t, l), w = _test_case(patches_dir, window)
    variant = summary["variants"][len(summary["variants"]) // 2]
    manual = entry.get("vessels")
    reference = read_image(patches_dir / manual, "L") > 127 if manual else segmenter(clean, fov)[1]
    reference &= fov
    near = ndimage.distance_transform_edt(~reference) <= 2.0
    panels = [("clean", clean)] + [(m, _as_clean_size(_restored(eval_dir, m, variant, entry), clean.shape)) for m in _methods(summary)]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.6), squeeze=False)
    for ax, (name, img) in zip(axes[0], panels):
        found = segmenter(img, fov)[1] & fov
        rgb = np.zeros((*found.shape, 3), np.float32)
        rgb[reference & found] = (1, 1, 1)
        rgb[reference & ~found] = (1, 0, 1)
        rgb[found & ~near] = (0, 1, 1)
        sub = (slice(t, t + w), slice(l, l + w))
        ax.imshow(rgb[sub], interpolation="nearest")
        missed = float((reference & ~found)[sub].sum() / max(reference[sub].sum(), 1))
        invented = float((found & ~near)[sub].sum() / max(found[sub].sum(), 1))
        ax.set_title(f"{label(name, converged)}\nmissed {missed:.0%}, invented {invented:.0%}", fontsize=7)
        ax.axis("off")
    ref_name = "manual mask" if manual else "segmentation of the clean image"
    fig.suptitle(f"{task} [{variant}]: vessels found (white), missed (magenta), invented (cyan) vs the {ref_name}", fontsize=8, y=1.04)
    return _fig_png(fig)


def sigma_figure(task: str, summary: dict) -> bytes | None:
    """PSNR and thin-vessel recall against the test noise level, for tasks tested at several sigmas."""
    sig = {}
    for v in summary["variants"]:
        digits = "".join(ch for ch in v if ch.isdigit())
        if not digits:
            return None
        sig[v] = int(digits)
    if len(sig) < 2:
        return None
    order = sorted(sig, key=sig.get)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    for m in sorted(summary["methods"]):
        if m == "clean":
            continue
        xs = [sig[v] for v in order]
        for ax, metric in ((a1, "psnr"), (a2, "ref_thin_recall")):
            ys = [summary["methods"][m].get(v, {}).get(metric, {}).get("mean", np.nan) for v in order]
            ax.plot(xs, ys, marker="o", label=m, linestyle="--" if m == "degraded" else "-")
    a1.set(xlabel="test noise sigma (0-255)", ylabel="PSNR (dB)", title=f"{task}: PSNR against sigma")
    a2.set(xlabel="test noise sigma (0-255)", ylabel="thin-vessel recall", title="thin vessels kept against sigma")
    a1.legend(fontsize=7)
    return _fig_png(fig)


def sigma_csv(summary: dict) -> str | None:
    """``method,sigma,psnr,ssim,thin_recall`` rows for tasks tested at several noise levels: the data
    of the sigma figure, declared as a DVC plot (``dvc plots show``)."""
    sig = {v: int("".join(ch for ch in v if ch.isdigit()) or -1) for v in summary["variants"]}
    if len(sig) < 2 or min(sig.values()) < 0:
        return None
    lines = ["method,sigma,psnr,ssim,thin_recall"]
    for m in sorted(summary["methods"]):
        if m == "clean":
            continue
        for v in sorted(sig, key=sig.get):
            st = summary["methods"][m].get(v, {})
            vals = [st.get(k, {}).get("mean") for k in ("psnr", "ssim", "ref_thin_recall")]
            lines.append(",".join([m, str(sig[v]), *("" if x is None else f"{x:.4f}" for x in vals)]))
    return "\n".join(lines) + "\n"


def cost_figure(task: str, summary: dict) -> bytes | None:
    """Quality (PSNR, the hardest variant) against compute (GFLOPs per output megapixel, counted by
    ``torch.utils.flop_counter``: deterministic, unlike timings, which stay out of the report)."""
    cost = (summary.get("cost") or {}).get("methods") or {}
    variant = summary["variants"][-1]
    pts = []
    for m, c in cost.items():
        stats = summary["methods"].get(m, {}).get(variant, {})
        if c.get("flops_per_mpix") and "psnr" in stats:
            pts.append((m, c["flops_per_mpix"] / 1e9, stats["psnr"]["mean"], c.get("parameters")))
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for m, gflops, q, params in pts:
        ax.scatter(gflops, q, s=30)
        ax.annotate(m + (f" ({params / 1e3:.0f}k)" if params else ""), (gflops, q), fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax.set(xscale="log", xlabel="GFLOPs per output megapixel", ylabel=f"PSNR [{variant}] (dB)", title=f"{task}: quality against compute")
    return _fig_png(fig)


def curves_figure(task: str, models_dir: Path) -> bytes | None:
    curves = {d.name: pd.read_csv(d / "curve.csv") for d in sorted(models_dir.iterdir()) if (d / "curve.csv").is_file() and not d.name.startswith(".")} if models_dir.is_dir() else {}
    if not curves:
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    for name, df in curves.items():
        tr = df.dropna(subset=["train_loss"])
        va = df.dropna(subset=["val_psnr"])
        a1.plot(tr["step"], tr["train_loss"], label=name)
        a2.plot(va["step"], va["val_psnr"], marker="o", label=name)
    a1.set(xlabel="step", ylabel="train loss", yscale="log", title=f"{task}: training loss")
    a2.set(xlabel="step", ylabel="val PSNR (dB)", title=f"{task}: validation PSNR")
    a1.legend(fontsize=8)
    a2.legend(fontsize=8)
    return _fig_png(fig)


def _three_digits(metric: str) -> bool:
    return metric.startswith(("ssim", "ref_", "manual_"))


def _fmt(stats: dict | None, metric: str) -> str:
    if not stats or metric not in stats:
        return "–"
    m = stats[metric]
    lo, hi = m["ci95"]
    if lo == hi:
        return f"{m['mean']:.3f}" if _three_digits(metric) else f"{m['mean']:.2f}"
    fmt = "{:.3f}" if _three_digits(metric) else "{:.2f}"
    return f"{fmt.format(m['mean'])} [{fmt.format(lo)}, {fmt.format(hi)}]"


NOT_CONVERGED = "not converged"


def label(method: str, converged: dict[str, dict] | None) -> str:
    """A method's name in a table: trained models that did not converge say so in every row."""
    verdict = (converged or {}).get(method)
    return f"{method} ({NOT_CONVERGED})" if verdict is not None and not verdict["converged"] else method


def task_convergence(models_root: Path | None, task: str, train: dict | None = None) -> dict[str, dict]:
    """Trained method -> whether the model converged, as the report judges it:

    - its own run: :func:`medrestore.training.convergence.model_convergence` of its curve (the gain
      over the last quarter, also in the model's ``metrics.json`` as ``converged``);
    - a validation PSNR that ended ``MIN_GAIN_DB`` or more below the run's best is no plateau (a GAN
      trading PSNR for its adversary, or a fine-tuning that undoes its start): not converged;
    - with ``train`` (params.yaml's ``train``): a model fine-tuned from another (``train.finetune``
      ``init``) or trained on another's outputs (``train.chains`` ``first``) converged only if that
      one did too, since its training includes the other's.
    """
    from medrestore.training.convergence import (
        MIN_GAIN_DB,
        curve_points,
        model_convergence,
    )

    root = Path(models_root) if models_root is not None else None
    memo: dict[tuple[str, str], dict | None] = {}

    def base_of(t: str, method: str) -> tuple[str, str] | None:
        for entry in ((train or {}).get("finetune") or {}).values():
            if entry.get("task") == t and entry.get("method", entry.get("model")) == method and "init" in entry:
                bt, _, bm = str(entry["init"]).partition("/")
                return bt, bm
        for entry in ((train or {}).get("chains") or {}).values():
            if entry.get("task") == t and entry.get("method", entry.get("model")) == method:
                return t, entry["first"]
        return None

    def verdict(t: str, method: str, seen: tuple = ()) -> dict | None:
        if (t, method) in memo:
            return memo[(t, method)]
        folder = root / t / method if root is not None else None
        own = model_convergence(folder) if folder is not None else None
        if own is None:
            memo[(t, method)] = None
            return None
        out = {**own, "run_converged": own["converged"]}
        pts = curve_points(folder / "curve.csv")
        if out["converged"] and pts:
            fall = max(p for _, p in pts) - pts[-1][1]
            if fall >= MIN_GAIN_DB:
                out.update(converged=False, why=f"validation PSNR ended {fall:.2f} dB below its best")
        base = base_of(t, method)
        if base is not None and base not in seen:
            b = verdict(*base, seen=(*seen, (t, method)))
            if b is not None and not b["converged"] and out["converged"]:
                out.update(converged=False, why=f"starts from {base[0]}/{base[1]}, which did not converge")
        if not out["converged"] and "why" not in out:
            out["why"] = "still improving"
        memo[(t, method)] = out
        return out

    if root is None or not (root / task).is_dir():
        return {}
    found = {}
    for d in sorted((root / task).iterdir()):
        if not d.name.startswith("."):
            v = verdict(task, d.name)
            if v is not None:
                found[d.name] = v
    return found


def _eligible(method: str, kind: str, converged: dict[str, dict] | None) -> bool:
    """Whether a method may be called best: baselines always, trained models only when converged."""
    if kind == "baseline":
        return True
    verdict = (converged or {}).get(method)
    return kind == "model" and (verdict is None or bool(verdict["converged"]))


def task_table(summary: dict, variant: str, converged: dict[str, dict] | None = None) -> tuple[list[str], list[list[str]]]:
    """Rows of one task/variant table, best value per column marked with ``**`` (among baselines and
    converged models: a model that did not converge is marked in its row and never called best)."""
    methods = sorted(summary["methods"], key=lambda m: (KIND_ORDER.get(summary["methods"][m][variant]["kind"], 9), m))
    best: dict[str, str] = {}
    metrics = table_metrics(summary, variant)
    for metric in metrics:
        cands = {
            m: summary["methods"][m][variant][metric]["mean"]
            for m in methods
            if _eligible(m, summary["methods"][m][variant]["kind"], converged) and metric in summary["methods"][m][variant]
        }
        if cands:
            pick = min if metric in LOWER_BETTER else max
            best[metric] = pick(cands, key=cands.get)
    header = ["method", "kind", *(HEADERS.get(m, m) for m in metrics)]
    rows = []
    for m in methods:
        stats = summary["methods"][m][variant]
        cells = [_fmt(stats, k) for k in metrics]
        cells = [f"**{c}**" if best.get(k) == m else c for c, k in zip(cells, metrics)]
        rows.append([label(m, converged), stats["kind"], *cells])
    return header, rows


def _trained(models_root: Path | None, task: str, model: str) -> str:
    """How many steps a run actually trained, read from its own metrics.json."""
    if models_root is None:
        return "not trained"
    folder = Path(models_root) / task / model
    if not (folder / "metrics.json").is_file():
        return "not trained"
    m = read_json(folder / "metrics.json")
    return f"{m.get('steps', '?')} steps"


def methods_paragraph(params: dict, models_root: Path | None = None) -> str:
    d, p, pa = params["download"], params["prepare"], params["patchify"]
    tasks = params["corrupt"]["tasks"]
    task_txt = "; ".join(
        f"`{name}`: train {json.dumps(spec['train'])}, test {', '.join(f'{k} {json.dumps(v)}' for k, v in spec['test'].items())}"
        for name, spec in tasks.items()
    )
    runs = params["train"]["runs"]
    run_txt = "; ".join(f"{key}: {_trained(models_root, r['task'], r['model'])}" for key, r in runs.items())
    finetune = params["train"].get("finetune") or {}
    if finetune:
        run_txt += ". Fine-tuned (the network starts from another trained model's weights, as Hayee2017 fine-tuned a pre-trained DnCNN): " + "; ".join(
            f"{key}: {_trained(models_root, r['task'], r['model'])} from {r['init']}" for key, r in finetune.items())
    chains = params["train"].get("chains") or {}
    if chains:
        run_txt += ". Chains (Hayee2017: a trained model, frozen, then a bicubic reduction, then a network trained on its outputs): " + "; ".join(
            f"{key} = {c['first']} -> /{c['downscale']} -> {c['model']} ({_trained(models_root, c['task'], c.get('method', c['model']))}, "
            f"on {'/'.join(str(n) for n in c.get('subset') or ['all'])} train/val patches), reported as `{c.get('method', c['model'])}`"
            for key, c in chains.items()
        )
    profile = params["train"].get("profile", "standard")
    return (
        f"Sources: {', '.join(d['sources'])}. Each image's field of view (FOV) is detected from the image, the black "
        f"border is cropped ({p['mode']}) and the image resized to {p['size']}x{p['size']}. Splits are by subject (both eyes of one person in one split) "
        f"(or, for fewer than three images, by disjoint {pa['region_grid']}x{pa['region_grid']} regions; val "
        f"{pa['val_fraction']}, test {pa['test_fraction']}, seed {params['seed']}); training patches are "
        f"{pa['patch_size']}x{pa['patch_size']} at stride {pa['stride']}, at least {pa['min_fov_fraction']:.0%} inside "
        f"the FOV. Corruptions (sigma on the 0-255 scale, clipped and quantised to 8 bits): {task_txt}. Training "
        f"(the papers' recipes in train.models under the `{profile}` budget profile, weights at the best validation PSNR kept): {run_txt}. Baselines are given the true noise sigma. Metrics: PSNR on RGB "
        f"(whole image, inside the FOV, green channel), SSIM on Y, NIQE and BRISQUE on Y, entropy of the 8-bit grey "
        f"histogram (pyiqa). Vessels: the pipeline's vessel segmenter (next section) is run on every image; 'thin "
        f"vessels kept' is the recall of reference vessels at most 2 px wide minus the recall expected by chance, 'vessels "
        f"invented' the share of detected vessel pixels more than 2 px "
        f"from any reference vessel, both inside the FOV; the reference is the manual mask where the dataset has one, else the segmentation of the clean image. Brackets are 95% bootstrap intervals over test images."
    )


CAPTIONS = {
    "crops": "The whole test image (zoom window in yellow), then the zoomed window for the clean image and every method (PSNR of the whole test image)",
    "errors": "Per-channel absolute error against the clean image in the zoom window (Hayee2017's figure 3); one colour scale for all panels",
    "vessels": "Vessel segmenter on each output: reference vessels found (white), missed (magenta), invented more than 2 px from any reference vessel (cyan)",
    "sigma": "PSNR and thin-vessel recall against the test noise level",
    "cost": "Quality against compute (GFLOPs per output megapixel; parameters in brackets). Measured seconds per megapixel are machine-dependent and kept out of this report: see artifacts/eval/TASK/cost.json and reports/bench.md",
    "curves": "Training curves (loss on training batches, PSNR on the validation patches)",
}


def _lock_stages(lock_path: Path) -> dict:
    import yaml

    if not lock_path.is_file():
        return {}
    return (yaml.safe_load(lock_path.read_text()) or {}).get("stages", {})


def _short(md5: str | None) -> str:
    return (md5 or "-").replace(".dir", "")[:10]


def _params_digest(entry: dict) -> str:
    import hashlib

    blob = json.dumps(entry.get("params", {}), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def lineage_rows(task: str, methods: list[str], summary: dict, stages: dict, models_root: Path, converged: dict[str, dict] | None = None) -> tuple[list[str], list[list[str]]]:
    """Per method: the DVC stage that produced it, the md5 of its model (as dvc.lock records it), of
    the task's corrupted data and of the evaluation code, a digest of its locked params, and the
    command that prints the rest of the chain (git commit, MLflow run)."""
    header = ["method", "stage", "model md5", "data md5 (corrupt)", "params digest", "full chain"]
    rows = []
    corrupt = stages.get(f"corrupt@{task}", {})
    data_md5 = _short(next((o.get("md5") for o in corrupt.get("outs", [])), None))
    evaluate = stages.get(f"evaluate@{task}", {})
    for m in methods:
        kind = summary["methods"][m][summary["variants"][0]]["kind"]
        if kind == "model":
            model_file = (Path(models_root) / task / m / "model.safetensors").as_posix()
            name, entry = next(((n, e) for n, e in stages.items() if n.startswith(("train@", "finetune@", "train_chain@")) and any(o["path"] == model_file for o in e.get("outs", []))), (None, {}))
            md5 = next((o.get("md5") for o in entry.get("outs", []) if o["path"] == model_file), None)
            rows.append([label(m, converged), name or "-", _short(md5), data_md5, _params_digest(entry) if entry else "-", f"`medrestore lineage {model_file}`"])
        else:
            rows.append([m, f"evaluate@{task}", "-", data_md5, _params_digest(evaluate) if evaluate else "-", f"`medrestore lineage artifacts/eval/{task}/summary.json`"])
    return header, rows


def paired_rows(summary: dict, variant: str, converged: dict[str, dict] | None = None) -> tuple[list[str], list[list[str]]] | None:
    """Each model minus the best classical baseline on the same test images."""
    entry = summary.get("paired_tests", {}).get(variant)
    if not entry or not entry.get("models"):
        return None
    header = ["model", f"vs {entry['baseline']}", "mean difference [95% CI]", "model better / worse (images)", "Wilcoxon p (smallest possible)"]
    rows = []
    shown = [m for m in table_metrics(summary, variant) if m != "entropy"]
    for model, tests in sorted(entry["models"].items()):
        for metric in shown:
            t = tests.get(metric)
            if not t or "mean_diff" not in t:
                continue
            fmt = "{:+.3f}" if _three_digits(metric) else "{:+.2f}"
            rows.append([label(model, converged), HEADERS.get(metric, metric), f"{fmt.format(t['mean_diff'])} [{fmt.format(t['ci95'][0])}, {fmt.format(t['ci95'][1])}]",
                         f"{t['model_better']} / {t['baseline_better']} of {t['n']}" if t.get("higher_is_better", True) else f"{t['baseline_better']} / {t['model_better']} of {t['n']}",
                         f"{t['wilcoxon_p']:.3f} ({t['min_p']:.3f})"])
    return header, rows


def cost_rows(summary: dict, converged: dict[str, dict] | None = None) -> tuple[list[str], list[list[str]]] | None:
    """Parameters and FLOPs per output megapixel. Measured seconds are machine-dependent: they are in
    ``artifacts/eval/<task>/cost.json`` and ``reports/bench.md``, not in this reproducible report."""
    methods = (summary.get("cost") or {}).get("methods") or {}
    if not methods:
        return None
    header = ["method", "parameters", "GFLOPs per output megapixel"]
    rows = []
    for m in sorted(methods):
        p, f = methods[m].get("parameters"), methods[m].get("flops_per_mpix")
        rows.append([label(m, converged), f"{p:,}" if isinstance(p, int) else "–", f"{f / 1e9:.1f}" if isinstance(f, (int, float)) else "–"])
    return header, rows


def segmenter_section(segmenter_dir: Path | None) -> tuple[list[str], str]:
    """What the vessel scores rest on: the segmenter and its own accuracy on the clean test images."""
    path = Path(segmenter_dir) / "metrics.json" if segmenter_dir else None
    if path is None or not path.is_file():
        text = ("Vessel scores use the multiscale Frangi segmenter (green channel, CLAHE, top 12% of FOV scores): "
                "no dataset with manual vessel masks was among the sources.")
        return ["## Vessel segmenter", "", text, ""], f"<h2>Vessel segmenter</h2><p>{html.escape(text)}</p>"
    m = read_json(path)

    def rng(key: str) -> str:
        v = m.get(key)
        return f"{v['mean']:.3f} ({v['min']:.3f}-{v['max']:.3f})" if isinstance(v, dict) and "mean" in v else "–"

    if m.get("segmenter", m.get("model")) == "frangi" or "auc" not in m:
        text = "Vessel scores use the multiscale Frangi segmenter (no dataset with manual vessel masks)."
    else:
        text = (f"Vessel scores use the pipeline's U-Net vessel segmenter, trained on the clean training images' manual masks "
                f"(first observer). On the clean test images, inside the FOV: AUC {rng('auc')}, Dice {rng('dice')}; the Frangi "
                f"segmenter on the same images: AUC {rng('frangi_auc')}, Dice {rng('frangi_dice')}; the second observer against the "
                f"first: Dice {rng('observer2_dice')} (mean, min-max over test images).")
    return ["## Vessel segmenter", "", text, ""], f"<h2>Vessel segmenter</h2><p>{html.escape(text)}</p>"


def performance_section(bench: dict, source: str) -> tuple[list[str], str]:
    """``make bench``'s figures (speed and memory; machine-dependent, read from the committed
    ``bench.json``, so the report's bytes depend on that file only)."""
    from medrestore.bench import sections

    intro = (f"From `{source}` (`make bench`), mode: {bench.get('mode', '?')}; machine: {bench.get('machine', {}).get('cpu_count', '?')} CPU "
             f"cores, torch {bench.get('machine', {}).get('torch', '?')}, GPU: {bench.get('machine', {}).get('cuda') or 'none'}.")
    md = ["## Performance", "", intro, ""]
    parts = [f"<h2 id='performance'>Performance</h2><p>{html.escape(intro)}</p>"]
    for title, text, header, rows in sections(bench):
        md += [f"### {title}", ""] + ([text, ""] if text else [])
        parts.append(f"<h3>{html.escape(title)}</h3>" + (f"<p>{html.escape(text)}</p>" if text else ""))
        if header and rows:
            md += _md_table(header, rows)
            parts.append(_html_table(header, rows))
    return md, "".join(parts)


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows), ""]


def _html_table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    out = [f"<table class='{cls}'><thead><tr>", "".join(f"<th>{html.escape(h)}</th>" for h in header), "</tr></thead><tbody>"]
    for r in rows:
        cells = []
        for c in r:
            if c.startswith("**"):
                cells.append(f"<td class='best'>{html.escape(c.strip('*'))}</td>")
            elif c.startswith("`") and c.endswith("`"):
                cells.append(f"<td><code>{html.escape(c.strip('`'))}</code></td>")
            else:
                cells.append(f"<td>{html.escape(c)}</td>")
        out.append(f"<tr>{''.join(cells)}</tr>")
    out.append("</tbody></table>")
    return "".join(out)

CONVERGENCE_TEXT = (
    "A trained model converged when its best validation PSNR gained less than 0.2 dB over the last quarter of its "
    "steps and its last validation is within 0.2 dB of its best (a falling curve is no plateau: a GAN trading PSNR "
    "for its adversary, or a fine-tuning undoing its start), and, for a model fine-tuned from another or trained on "
    "another's outputs, when that one converged too. A decaying learning rate flattens the last quarter by itself: "
    "the verdict means no more gain at this schedule's length. A model that did not converge is marked in every "
    "table and figure and is never called best: its numbers describe the training budget, not the paper's method."
)

#: reports/metrics.json: per method and test variant, these summary columns under these names (the
#: vessel scores against the manual masks where the dataset has them, else against the clean image's
#: segmentation), plus ``converged`` for trained models.
HEADLINE = {
    "psnr": ("psnr",), "psnr_fov": ("psnr_fov",), "psnr_green": ("psnr_green",), "ssim": ("ssim",),
    "niqe": ("niqe",), "brisque": ("brisque",),
    "thin_kept": ("manual_thin_recall_above_chance", "ref_thin_recall_above_chance"),
    "invented": ("manual_invented_rate", "ref_invented_rate"),
}


def headline_numbers(stats: dict, convergence: dict | None) -> dict:
    out = {}
    for name, columns in HEADLINE.items():
        col = next((c for c in columns if c in stats), None)
        if col is not None:
            out[name] = stats[col]["mean"]
    if convergence is not None:
        out["converged"] = bool(convergence["converged"])
    return out


def convergence_rows(conv: dict[str, dict], task_models: Path) -> tuple[list[str], list[list[str]]]:
    header = ["model", "steps", "best val PSNR", "gain over last quarter (dB)", "converged"]
    rows = []
    for m, v in sorted(conv.items()):
        metrics = read_json(task_models / m / "metrics.json") if (task_models / m / "metrics.json").is_file() else {}
        gain = v.get("last_quarter_gain_db")
        rows.append([m, str(metrics.get("steps", "?")), f"{metrics['best_val_psnr']:.2f}" if "best_val_psnr" in metrics else "–",
                     "–" if gain is None else f"{gain:+.2f}", "yes" if v["converged"] else f"no ({v.get('why', 'still improving')})"])
    return header, rows


def banner(params: dict, conv_by_task: dict[str, dict[str, dict]]) -> str | None:
    """The report's first line when its numbers are not claims about the papers' methods."""
    profile = params["train"].get("profile", "standard")
    runs = [(t, m) for t, c in conv_by_task.items() for m, v in c.items() if not v["converged"]]
    total = sum(len(c) for c in conv_by_task.values())
    if profile == "quick":
        return (f"**Quick tour (train.profile: quick): the models are undertrained ({len(runs)} of {total} did not converge); "
                "nothing in this report is to be concluded about the methods.**")
    if runs:
        return (f"**{len(runs)} of {total} trained models did not converge ({', '.join(f'{t}/{m}' for t, m in runs)}): "
                "their rows are marked and they make no claim about their papers' methods.**")
    return None


def best_rows(eval_root: Path, tasks: list[str], conv_by_task: dict[str, dict[str, dict]]) -> tuple[list[str], list[list[str]]]:
    """Per task and test corruption: the best method in PSNR inside the FOV, and the best on vessels,
    among baselines and converged models (:func:`best_on_vessels`)."""
    header = ["task [test]", "best in PSNR inside the FOV", "best on vessels (most thin vessels kept above chance, inventing at most half the input's share)"]
    rows = []
    for task in tasks:
        summary = read_json(Path(eval_root) / task / "summary.json")
        conv = conv_by_task.get(task, {})
        for variant in summary["variants"]:
            top = _best_by(summary, variant, conv, "psnr_fov")
            vessels = best_on_vessels(summary, variant, conv)
            rows.append([f"{task} [{variant}]", top or "–", vessels or "none keeps thin vessels above chance without inventing"])
    return header, rows


def _best_by(summary: dict, variant: str, conv: dict, metric: str) -> str | None:
    scores = {m: v[variant][metric]["mean"] for m, v in summary["methods"].items()
              if variant in v and metric in v[variant] and _eligible(m, v[variant]["kind"], conv)}
    if not scores:
        return None
    top = max(sorted(scores), key=scores.get)
    return f"{top} ({scores[top]:.2f} dB)"


def best_on_vessels(summary: dict, variant: str, conv: dict) -> str | None:
    """The baseline or converged model that keeps the most thin vessels (recall above chance) among
    those that keep some (the 95% interval of that recall above zero) and invent at most half as large
    a share of vessel pixels as the degraded input does; None when no method qualifies."""
    prefix = "manual" if any("manual_thin_recall_above_chance" in v.get(variant, {}) for v in summary["methods"].values()) else "ref"
    kept, invented = f"{prefix}_thin_recall_above_chance", f"{prefix}_invented_rate"
    floor = summary["methods"].get("degraded", {}).get(variant, {}).get(invented, {}).get("mean")
    cands = {}
    for m, v in summary["methods"].items():
        st = v.get(variant, {})
        if (kept in st and invented in st and _eligible(m, st["kind"], conv) and st[kept]["ci95"][0] > 0
                and (floor is None or st[invented]["mean"] <= floor / 2)):
            cands[m] = (st[kept]["mean"], st[invented]["mean"])
    if not cands:
        return None
    top = max(sorted(cands), key=lambda m: cands[m][0])
    return f"{top} (kept {cands[top][0]:.3f}, invented {cands[top][1]:.3f})"



def build_report(
    params: dict,
    tasks: list[str],
    eval_root: Path,
    patches_dir: Path,
    models_root: Path,
    out_dir: Path,
    *,
    segmenter=None,
    segmenter_dir: Path | None = None,
    lock_path: Path = Path("dvc.lock"),
    bench_path: Path | None = None,
) -> dict:
    """Write the report. ``segmenter`` is the pipeline's vessel segmenter (Frangi when None);
    ``bench_path``: ``make bench``'s ``bench.json``, shown as the performance section when it exists."""
    if segmenter is None:
        from medrestore.vessels import VesselSegmenter

        segmenter = VesselSegmenter(None)
    out_dir = Path(out_dir)
    stages = _lock_stages(Path(lock_path))
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)  # a DVC plots output: exists even with no sigma task
    methods = methods_paragraph(params, Path(models_root))
    conv_by_task = {t: task_convergence(models_root, t, params["train"]) for t in tasks}
    first = banner(params, conv_by_task)
    md = ["# medrestore comparison report", ""] + ([first, ""] if first else []) + ["## Methods", "", methods, ""]
    html_parts = ["<h1>medrestore comparison report</h1>"]
    if first:
        html_parts.append(f"<p class='banner'><strong>{html.escape(first.strip('*'))}</strong></p>")
    html_parts.append(f"<h2>Methods</h2><p>{html.escape(methods)}</p>")
    claims = check_claims(Path(eval_root), conv_by_task, int(params["seed"]))
    write_json_atomic(out_dir / "claims.json", claims)
    header, rows = claims_rows(claims)
    counts = ", ".join(f"{sum(c['verdict'] == v for c in claims)} {v}" for v in ("reproduced", "not reproduced", "not converged", "not run"))
    intro = f"What the papers claim, checked against this run's test images ({counts}). Rule: {RULE}."
    md += ["## Paper claims", "", intro, "", *_md_table(header, rows)]
    html_parts.append(f"<h2 id='claims'>Paper claims</h2><p>{html.escape(intro)}</p>" + _html_table(header, rows))
    header, rows = best_rows(Path(eval_root), tasks, conv_by_task)
    md += ["## Best methods", "", "Among baselines and converged models only.", "", *_md_table(header, rows)]
    html_parts.append("<h2 id='best'>Best methods</h2><p>Among baselines and converged models only.</p>" + _html_table(header, rows))
    seg_md, seg_html = segmenter_section(segmenter_dir)
    md += seg_md
    html_parts.append(seg_html)
    headline: dict = {}
    for task in tasks:
        eval_dir = Path(eval_root) / task
        summary = read_json(eval_dir / "summary.json")
        conv = conv_by_task[task]
        md += [f"## {task}", ""]
        html_parts.append(f"<h2 id='{html.escape(task)}'>{html.escape(task)}</h2>")
        for variant in summary["variants"]:
            header, rows = task_table(summary, variant, conv)
            md += [f"### {task}, test corruption `{variant}`", "", *_md_table(header, rows)]
            html_parts.append(f"<h3>test corruption <code>{html.escape(variant)}</code></h3>" + _html_table(header, rows))
            paired = paired_rows(summary, variant, conv)
            if paired:
                md += [f"Paired comparison with the best classical baseline, `{variant}`:", "", *_md_table(*paired)]
                html_parts.append(f"<p>Paired comparison with the best classical baseline, <code>{html.escape(variant)}</code>:</p>" + _html_table(*paired))
            for m, v in summary["methods"].items():
                headline.setdefault(task, {}).setdefault(m, {})[variant] = headline_numbers(v[variant], conv.get(m))
        methods = [m for m in sorted(summary["methods"], key=lambda m: (KIND_ORDER.get(summary["methods"][m][summary["variants"][0]]["kind"], 9), m)) if m != "clean"]
        header, rows = lineage_rows(task, methods, summary, stages, Path(models_root), conv)
        md += [f"### {task}: lineage", "", *_md_table(header, rows)]
        html_parts.append(f"<h3>{html.escape(task)}: lineage</h3>" + _html_table(header, rows, "lineage"))
        if conv:
            header, rows = convergence_rows(conv, Path(models_root) / task)
            md += [f"### {task}: convergence", "", CONVERGENCE_TEXT, "", *_md_table(header, rows)]
            html_parts.append(f"<h3>{html.escape(task)}: convergence</h3><p>{html.escape(CONVERGENCE_TEXT)}</p>" + _html_table(header, rows))
        costs = cost_rows(summary, conv)
        if costs:
            md += [f"### {task}: cost", "", *_md_table(*costs)]
            html_parts.append(f"<h3>{html.escape(task)}: cost</h3>" + _html_table(*costs))
        figures = [
            ("crops", crops_figure(task, eval_dir, patches_dir, summary, converged=conv)),
            ("errors", error_maps_figure(task, eval_dir, patches_dir, summary)),
            ("vessels", vessel_figure(task, eval_dir, patches_dir, summary, segmenter, converged=conv)),
            ("sigma", sigma_figure(task, summary)),
            ("cost", cost_figure(task, summary)),
            ("curves", curves_figure(task, Path(models_root) / task)),
        ]
        curve = sigma_csv(summary)
        if curve:
            write_text_atomic(out_dir / "plots" / f"{task}_sigma.csv", curve)
        for kind, png in figures:
            if png is None:
                continue
            rel = f"figures/{task}_{kind}.png"
            write_bytes_atomic(out_dir / rel, png)
            md += [f"![{task} {kind}]({rel})", "", f"*{CAPTIONS[kind]}.*", ""]
            b64 = base64.b64encode(png).decode()
            html_parts.append(f"<figure><img alt='{task} {kind}' src='data:image/png;base64,{b64}'><figcaption>{html.escape(CAPTIONS[kind])}.</figcaption></figure>")
    if bench_path is not None and Path(bench_path).is_file():
        perf_md, perf_html = performance_section(read_json(Path(bench_path)), Path(bench_path).name)
        md += perf_md
        html_parts.append(perf_html)
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}.best{font-weight:bold;background:#e8f4e8}img{max-width:100%}"
        "table.lineage td{text-align:left;font-family:monospace;font-size:12px}figcaption{font-size:13px;color:#555}"
    )
    page = f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>medrestore report</title><style>{style}</style></head><body>{''.join(html_parts)}</body></html>\n"
    write_text_atomic(out_dir / "index.html", page)
    write_text_atomic(out_dir / "report.md", "\n".join(md))
    write_json_atomic(out_dir / "metrics.json", headline)
    return headline


# --------------------------------------------------------------------------- browser check
_CHECK_SCRIPT = """<script>
window.addEventListener('load', () => {
  const images = [...document.images].map(i => ({alt: i.alt, loaded: i.complete && i.naturalWidth > 0, width: i.naturalWidth}));
  const tables = [...document.querySelectorAll('table')].map(t => ({head: t.querySelectorAll('thead tr').length, body: t.querySelectorAll('tbody tr').length}));
  const pre = document.createElement('pre');
  pre.id = 'medrestore-check';
  pre.textContent = JSON.stringify({images, tables, title: document.title, h2: document.querySelectorAll('h2').length});
  document.body.appendChild(pre);
});
</script>"""


def chromium_binary() -> str | None:
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def browser_check(page: Path, screenshot: Path | None = None, width: int = 1200, height: int = 2400) -> dict:
    """Open ``page`` in headless Chromium: which images loaded, how many rows each table has, and
    optionally a screenshot. The page is checked as a copy with a small script appended, so the
    published file is never modified."""
    import subprocess
    import tempfile

    exe = chromium_binary()
    if exe is None:
        raise RuntimeError("no Chromium found. Fix: `apt-get install chromium` (Debian) and rerun.")
    page = Path(page).resolve()
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--allow-file-access-from-files"]
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.html"
        probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _CHECK_SCRIPT + "</body>"), encoding="utf-8")
        res = subprocess.run([*flags, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120, check=False)
        start = res.stdout.find('<pre id="medrestore-check">')
        if start < 0:
            raise RuntimeError(f"Chromium did not run the page check (exit {res.returncode}): {res.stderr[-1500:]}")
        body = res.stdout[start + len('<pre id="medrestore-check">') : res.stdout.index("</pre>", start)]
        result = json.loads(html.unescape(body))
        if screenshot is not None:
            shot = Path(tmp) / "shot.png"
            subprocess.run([*flags, f"--window-size={width},{height}", f"--screenshot={shot}", page.as_uri()],
                           capture_output=True, text=True, timeout=120, check=True)
            write_bytes_atomic(screenshot, shot.read_bytes())
            result["screenshot"] = str(screenshot)
    return result


def best_models(eval_root: Path, tasks: list[str], metric: str = "psnr_fov", models_root: Path | None = None, train: dict | None = None) -> dict[str, dict]:
    """Per task, the converged trained model with the highest mean ``metric`` over the test
    corruptions (a model that did not converge is never chosen; ``models_root`` holds the curves,
    ``train`` the params that say which models start from which: :func:`task_convergence`)."""
    best: dict[str, dict] = {}
    for task in tasks:
        summary = read_json(Path(eval_root) / task / "summary.json")
        conv = task_convergence(models_root, task, train) if models_root is not None else {}
        scores = {}
        for m, variants in summary["methods"].items():
            vals = [v[metric]["mean"] for v in variants.values() if v.get("kind") == "model" and metric in v]
            if vals and (m not in conv or conv[m]["converged"]):
                scores[m] = float(np.mean(vals))
        if scores:
            top = max(sorted(scores), key=scores.get)
            best[task] = {"model": top, "metric": f"mean {metric} over test corruptions", "value": scores[top]}
    return best
