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
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from medrestore.data.prepare import safe_name  # noqa: E402
from medrestore.io import read_image, read_json, write_bytes_atomic, write_json_atomic, write_text_atomic  # noqa: E402
from medrestore.metrics import LOWER_IS_BETTER  # noqa: E402

TABLE_METRICS = ("psnr", "psnr_fov", "psnr_green", "ssim", "niqe", "brisque", "entropy", "ref_thin_recall_above_chance", "ref_invented_rate")
HEADERS = {"ref_thin_recall_above_chance": "thin vessels kept", "ref_invented_rate": "vessels invented"}
LOWER_BETTER = LOWER_IS_BETTER | {"ref_invented_rate", "manual_invented_rate"}
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


def crops_figure(task: str, eval_dir: Path, patches_dir: Path, summary: dict, window: int = 128) -> bytes:
    meta = read_json(patches_dir / "patches.json")
    entry = meta["test"][0]
    clean = read_image(patches_dir / entry["image"], "RGB")
    fov = read_image(patches_dir / entry["fov"], "L") > 127
    t, l = _detail_window(clean, fov, min(window, *clean.shape[:2]))
    w = min(window, *clean.shape[:2])
    methods = ["degraded"] + sorted(m for m, v in summary["methods"].items() if m not in ("degraded", "clean"))
    variants = summary["variants"]
    fig, axes = plt.subplots(len(variants), len(methods) + 1, figsize=(2.0 * (len(methods) + 1), 2.15 * len(variants)), squeeze=False)
    for r, variant in enumerate(variants):
        panels = [("clean", clean)] + [
            (m, read_image(eval_dir / "restored" / m / variant / f"{safe_name(entry['id'])}.png", "RGB")) for m in methods
        ]
        for c, (name, img) in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(img[t : t + w, l : l + w], interpolation="nearest")
            label = name if name == "clean" else f"{name}\n{summary['methods'][name][variant]['psnr']['mean']:.2f} dB"
            ax.set_title(f"{label}" + (f"  [{variant}]" if c == 0 and len(variants) > 1 else ""), fontsize=8)
            ax.axis("off")
    fig.suptitle(f"{task}: {entry['id']}, {w}x{w} crop at ({t}, {l})", fontsize=9, y=1.02)
    return _fig_png(fig)


def curves_figure(task: str, models_dir: Path) -> bytes | None:
    curves = {d.name: pd.read_csv(d / "curve.csv") for d in sorted(models_dir.iterdir()) if (d / "curve.csv").is_file()} if models_dir.is_dir() else {}
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


def task_table(summary: dict, variant: str) -> tuple[list[str], list[list[str]]]:
    """Rows of one task/variant table, best value per column marked with ``**``."""
    methods = sorted(summary["methods"], key=lambda m: (KIND_ORDER.get(summary["methods"][m][variant]["kind"], 9), m))
    best: dict[str, str] = {}
    for metric in TABLE_METRICS:
        cands = {
            m: summary["methods"][m][variant][metric]["mean"]
            for m in methods
            if summary["methods"][m][variant]["kind"] in ("model", "baseline") and metric in summary["methods"][m][variant]
        }
        if cands:
            pick = min if metric in LOWER_BETTER else max
            best[metric] = pick(cands, key=cands.get)
    header = ["method", "kind", *(HEADERS.get(m, m) for m in TABLE_METRICS)]
    rows = []
    for m in methods:
        stats = summary["methods"][m][variant]
        cells = [_fmt(stats, k) for k in TABLE_METRICS]
        cells = [f"**{c}**" if best.get(k) == m else c for c, k in zip(cells, TABLE_METRICS)]
        rows.append([m, stats["kind"], *cells])
    return header, rows


def methods_paragraph(params: dict) -> str:
    d, p, pa = params["download"], params["prepare"], params["patchify"]
    tasks = params["corrupt"]["tasks"]
    task_txt = "; ".join(
        f"`{name}`: train {json.dumps(spec['train'])}, test {', '.join(f'{k} {json.dumps(v)}' for k, v in spec['test'].items())}"
        for name, spec in tasks.items()
    )
    runs = params["train"]["runs"]
    run_txt = "; ".join(
        f"{key}: {params['train']['models'][r['model']].get('max_steps', params['train']['defaults']['max_steps'])} steps"
        for key, r in runs.items()
    )
    return (
        f"Sources: {', '.join(d['sources'])}. Each image's field of view (FOV) is detected from the image, the black "
        f"border is cropped ({p['mode']}) and the image resized to {p['size']}x{p['size']}. Splits are by image "
        f"(or, for fewer than three images, by disjoint {pa['region_grid']}x{pa['region_grid']} regions; val "
        f"{pa['val_fraction']}, test {pa['test_fraction']}, seed {params['seed']}); training patches are "
        f"{pa['patch_size']}x{pa['patch_size']} at stride {pa['stride']}, at least {pa['min_fov_fraction']:.0%} inside "
        f"the FOV. Corruptions (sigma on the 0-255 scale, clipped and quantised to 8 bits): {task_txt}. Training "
        f"(Adam, best validation PSNR kept): {run_txt}. Baselines are given the true noise sigma. Metrics: PSNR on RGB "
        f"(whole image, inside the FOV, green channel), SSIM on Y, NIQE and BRISQUE on Y, entropy of the 8-bit grey "
        f"histogram (pyiqa). Vessels: a multiscale Frangi segmenter (green channel, CLAHE, top 12% of FOV "
        f"scores) is run on every image; 'thin vessels kept' is the recall of the clean image's vessels at most 2 px wide "
        f"minus the recall expected by chance, 'vessels invented' the share of detected vessel pixels more than 2 px "
        f"from any vessel of the clean image, both inside the FOV. Brackets are 95% bootstrap intervals over test images."
    )


def build_report(params: dict, tasks: list[str], eval_root: Path, patches_dir: Path, models_root: Path, out_dir: Path) -> dict:
    out_dir = Path(out_dir)
    md = ["# medrestore comparison report", "", "## Methods", "", methods_paragraph(params), ""]
    html_parts = [f"<h1>medrestore comparison report</h1><h2>Methods</h2><p>{html.escape(methods_paragraph(params))}</p>"]
    headline: dict = {}
    for task in tasks:
        eval_dir = Path(eval_root) / task
        summary = read_json(eval_dir / "summary.json")
        md += [f"## {task}", ""]
        html_parts.append(f"<h2>{html.escape(task)}</h2>")
        for variant in summary["variants"]:
            header, rows = task_table(summary, variant)
            md += [f"### {task}, test corruption `{variant}`", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            md += ["| " + " | ".join(r) + " |" for r in rows]
            md.append("")
            html_parts.append(f"<h3>test corruption <code>{html.escape(variant)}</code></h3><table><thead><tr>")
            html_parts.append("".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead><tbody>")
            for r in rows:
                cells = "".join(
                    f"<td class='best'>{html.escape(c.strip('*'))}</td>" if c.startswith("**") else f"<td>{html.escape(c)}</td>" for c in r
                )
                html_parts.append(f"<tr>{cells}</tr>")
            html_parts.append("</tbody></table>")
            for m, v in summary["methods"].items():
                stats = v[variant]
                headline.setdefault(task, {}).setdefault(m, {})[variant] = {
                    k: stats[k]["mean"] for k in ("psnr", "ssim", "niqe", "brisque") if k in stats
                }
        figures = [("crops", crops_figure(task, eval_dir, patches_dir, summary)), ("curves", curves_figure(task, Path(models_root) / task))]
        for kind, png in figures:
            if png is None:
                continue
            rel = f"figures/{task}_{kind}.png"
            write_bytes_atomic(out_dir / rel, png)
            caption = "Clean, degraded and restored crops (PSNR of the whole test image)" if kind == "crops" else "Training curves"
            md += [f"![{task} {kind}]({rel})", "", f"*{caption}.*", ""]
            b64 = base64.b64encode(png).decode()
            html_parts.append(f"<figure><img alt='{task} {kind}' src='data:image/png;base64,{b64}'><figcaption>{caption}.</figcaption></figure>")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}.best{font-weight:bold;background:#e8f4e8}img{max-width:100%}"
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
  const tables = [...document.querySelectorAll('table')].map(t => t.querySelectorAll('tbody tr').length);
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
        res = subprocess.run([*flags, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
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
