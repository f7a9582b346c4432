"""The report's figures, as PNG bytes: zoomed crops, per-channel error maps, vessels found / missed /
invented, quality against noise level and against compute, training curves (matplotlib, Agg)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from medrestore.core.io import read_image, read_json, read_mask
from medrestore.data.names import safe_name
from medrestore.evaluation.gates import failed_in_summary
from medrestore.report.policy import label

#: The caption under each figure, by kind (the figure files are ``figures/<task>_<kind>.png``, their small
#: copies ``report_figures/<task>_<kind>.png``).
CAPTIONS = {
    "crops": "The whole test image (zoom window in yellow), then the zoomed window for the clean image and every "
             "method (PSNR of the whole test image)",
    "errors": "Per-channel absolute error against the clean image in the zoom window (Hayee2017's figure 3); one "
              "colour scale for all panels",
    "vessels": "Vessel segmenter on each output: reference vessels found (white), missed (magenta), invented more "
               "than 2 px from any reference vessel (cyan)",
    "sigma": "PSNR and thin-vessel recall against the test noise level",
    "cost": "Quality against compute (GFLOPs per output megapixel; parameters in brackets). Measured seconds per "
            "megapixel are machine-dependent and kept out of this report: see artifacts/eval/TASK/cost.json and "
            "reports/bench.md",
    "curves": "Training curves (loss on training batches, PSNR on the validation patches)",
}


#: The small copies of the figures that report.md shows (``report_figures/``, in git): at most this wide
#: (pixels; about a git host's page column) and in a palette of this many colours.
SMALL_WIDTH, SMALL_COLOURS = 1000, 128


def small_png(png: bytes, width: int = SMALL_WIDTH, colours: int = SMALL_COLOURS) -> bytes:
    """A small copy of a figure for git: flattened on white, at most ``width`` pixels wide (Lanczos),
    ``colours`` palette colours (median cut, no dithering), PNG with no metadata chunk. The same
    figure always gives the same bytes."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as src:
        im = src.convert("RGBA")
    flat = Image.new("RGB", im.size, (255, 255, 255))
    flat.paste(im, mask=im.getchannel("A"))
    if flat.width > width:
        flat = flat.resize((width, max(1, round(flat.height * width / flat.width))), Image.Resampling.LANCZOS)
    small = flat.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    small.save(buf, format="PNG", optimize=True)  # Pillow writes no tIME/tEXt chunk unless given pnginfo
    return buf.getvalue()


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
    fov = read_mask(patches_dir / entry["fov"])
    w = min(window, *clean.shape[:2])
    return entry, clean, fov, _detail_window(clean, fov, w), w


def crops_figure(task: str, eval_dir: Path, patches_dir: Path, summary: dict, window: int = 128,
                 converged: dict[str, dict] | None = None) -> bytes:
    """Qualitative grid: the whole test image with the zoom window marked, then the zoomed window
    (the green-channel detail densest, i.e. thin vessels) for the clean image and every method."""
    from matplotlib.patches import Rectangle

    entry, clean, _fov, (t, l), w = _test_case(patches_dir, window)
    methods = _methods(summary)
    variants = summary["variants"]
    fig, axes = plt.subplots(len(variants), len(methods) + 2, figsize=(2.0 * (len(methods) + 2), 2.15 * len(variants)),
                             squeeze=False)
    for r, variant in enumerate(variants):
        ax = axes[r][0]
        ax.imshow(clean)
        ax.add_patch(Rectangle((l, t), w, w, fill=False, edgecolor="yellow", linewidth=1.5))
        ax.set_title("test image" + (f"  [{variant}]" if len(variants) > 1 else ""), fontsize=8)
        ax.axis("off")
        panels = [("clean", clean)] + [(m,
                                        _as_clean_size(_restored(eval_dir, m, variant, entry),
                                                       clean.shape)) for m in methods]
        failed = failed_in_summary(summary, variant)
        for c, (name, img) in enumerate(panels, start=1):
            ax = axes[r][c]
            ax.imshow(img[t : t + w, l : l + w], interpolation="nearest")
            stats = summary["methods"].get(name, {}).get(variant, {})
            title = label(name, converged, failed).replace(" (", "\n(")
            title = title if "psnr" not in stats else f"{title}\n{stats['psnr']['mean']:.2f} dB"
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.suptitle(f"{task}: {entry['id']}, {w}x{w} zoom at ({t}, {l})", fontsize=9, y=1.02)
    return _fig_png(fig)


def error_maps_figure(task: str, eval_dir: Path, patches_dir: Path, summary: dict, window: int = 128,
                      converged: dict[str, dict] | None = None) -> bytes:
    """Per-channel absolute error against the clean image in the zoom window (Hayee2017's figure 3),
    for the hardest test corruption: rows are methods, columns R, G, B; one colour scale for all."""
    entry, clean, _, (t, l), w = _test_case(patches_dir, window)
    variant = summary["variants"][-1]
    methods = _methods(summary)
    failed = failed_in_summary(summary, variant)
    ref = clean[t : t + w, l : l + w].astype(np.float32)
    errs = {m: np.abs(_as_clean_size(_restored(eval_dir, m, variant, entry),
                                     clean.shape)[t : t + w, l : l + w].astype(np.float32) - ref) for m in methods}
    vmax = max(float(np.percentile(e, 99)) for e in errs.values()) or 1.0
    fig, axes = plt.subplots(len(methods), 3, figsize=(7.0, 2.0 * len(methods)), squeeze=False)
    for r, m in enumerate(methods):
        for c, ch in enumerate("RGB"):
            ax = axes[r][c]
            im = ax.imshow(errs[m][..., c], cmap="inferno", vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_title(f"{label(m, converged, failed)}, {ch}: mean {errs[m][..., c].mean():.1f}", fontsize=7)
            ax.axis("off")
    fig.colorbar(im, ax=axes, shrink=0.6, label="absolute error (0-255)")
    fig.suptitle(f"{task} [{variant}]: per-channel error, {entry['id']}", fontsize=9)
    return _fig_png(fig)


def vessel_figure(task: str, eval_dir: Path, patches_dir: Path, summary: dict, segmenter, window: int = 192,
                  converged: dict[str, dict] | None = None,
                  methods: list[str] | None = None, title: str = "", with_images: bool = False) -> bytes:
    """The pipeline's vessel segmenter on every method's output (or those of ``methods``) in the zoom
    window: vessels of the reference found (white), missed (magenta) and invented (more than 2 px
    from any reference vessel, cyan). The reference is the manual mask when the dataset has one,
    else the segmentation of the clean image. ``with_images``: the zoomed images themselves in a
    first row, above their vessel maps."""
    from scipy import ndimage

    entry, clean, fov, (t, l), w = _test_case(patches_dir, window)
    variant = summary["variants"][len(summary["variants"]) // 2]
    manual = entry.get("vessels")
    reference = read_mask(patches_dir / manual) if manual else segmenter(clean, fov)[1]
    reference &= fov
    near = ndimage.distance_transform_edt(~reference) <= 2.0
    failed = failed_in_summary(summary, variant)
    panels = [("clean", clean)] + [(m,
                                    _as_clean_size(_restored(eval_dir, m, variant, entry),
                                                   clean.shape)) for m in (methods or _methods(summary))]
    rows = 2 if with_images else 1
    fig, axes = plt.subplots(rows, len(panels), figsize=(2.2 * len(panels), 2.6 * rows), squeeze=False)
    for i, (name, img) in enumerate(panels):
        ax = axes[-1][i]
        if with_images:
            axes[0][i].imshow(img[t : t + w, l : l + w], interpolation="nearest")
            axes[0][i].set_title(label(name, converged, failed), fontsize=7)
            axes[0][i].axis("off")
        found = segmenter(img, fov)[1] & fov
        rgb = np.zeros((*found.shape, 3), np.float32)
        rgb[reference & found] = (1, 1, 1)
        rgb[reference & ~found] = (1, 0, 1)
        rgb[found & ~near] = (0, 1, 1)
        sub = (slice(t, t + w), slice(l, l + w))
        ax.imshow(rgb[sub], interpolation="nearest")
        missed = float((reference & ~found)[sub].sum() / max(reference[sub].sum(), 1))
        invented = float((found & ~near)[sub].sum() / max(found[sub].sum(), 1))
        ax.set_title(f"{label(name, converged, failed)}\nmissed {missed:.0%}, invented {invented:.0%}", fontsize=7)
        ax.axis("off")
    ref_name = "manual mask" if manual else "segmentation of the clean image"
    fig.suptitle(
        title or f"{task} [{variant}]: vessels found (white), missed (magenta), invented (cyan) vs the {ref_name}",
        fontsize=8,
        y=1.04 if rows == 1 else 0.98,
    )
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
        ax.annotate(m + (f" ({params / 1e3:.0f}k)" if params else ""), (gflops, q), fontsize=7, xytext=(4, 2),
                    textcoords="offset points")
    ax.set(xscale="log", xlabel="GFLOPs per output megapixel", ylabel=f"PSNR [{variant}] (dB)",
           title=f"{task}: quality against compute")
    return _fig_png(fig)


def curves_figure(task: str, models_dir: Path) -> bytes | None:
    curves = (
        {
            d.name: pd.read_csv(d / "curve.csv")
            for d in sorted(models_dir.iterdir())
            if (d / "curve.csv").is_file() and not d.name.startswith(".")
        }
        if models_dir.is_dir()
        else {}
    )
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
