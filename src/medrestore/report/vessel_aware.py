"""The report's vessel-aware section: each model of ``train.vessel`` (a run of ``train.runs`` trained
again with a vessel term in its loss) against its plain twin, image by image; the vessel overlays of
both in one zoom window; and the weight sweep (``reports/vessel_sweep.json``, collected from DVC
experiments by :mod:`medrestore.experiments.sweep`).

Vessels here are judged by the independent segmenter (``indep_`` columns: another seed, the second
observer's masks), never by the segmenter inside the loss alone: a loss built on one network can
teach the restoration to please that network without keeping a single vessel. Both are shown.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from medrestore.core.io import read_json
from medrestore.evaluation.gates import failed_in_summary
from medrestore.evaluation.scoring import interval, subjects_of
from medrestore.report.figures import _fig_png, vessel_figure
from medrestore.report.policy import label

#: The PSNR a vessel term may cost and still count as free (dB, inside the FOV).
PSNR_BUDGET_DB = 0.2
#: The columns compared, as (column, title, lower is better).
COMPARED = (
    ("psnr_fov", "PSNR in FOV (dB)", False),
    ("indep_thin_recall_above_chance", "thin vessels kept (independent)", False),
    ("indep_invented_rate", "vessels invented (independent)", True),
    ("manual_thin_recall_above_chance", "thin vessels kept (loss's segmenter)", False),
    ("manual_invented_rate", "vessels invented (loss's segmenter)", True),
)
FORMS = {"vessel": "segmenter features", "vessel_prob": "vessel probability, thin-weighted"}
CAPTION_OVERLAY = ("The plain and the vessel-aware models in one zoom window (top) and the independent segmenter's "
                   "vessels on them (bottom): reference (manual mask) vessels found (white), missed (magenta), "
                   "invented more than 2 px from any reference vessel (cyan)")
CAPTION_SWEEP = ("Weight sweep of the vessel terms (DVC experiments): PSNR inside the FOV against thin vessels kept "
                 "above chance and against vessels invented, both by the independent segmenter; one point per weight, "
                 "the plain model and the baselines as reference points")


def vessel_groups(train: dict) -> dict[tuple[str, str], list[dict]]:
    """(task, plain method) -> its vessel-aware runs: key, method, form (the perceptual backbone) and weight."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for key, entry in (train.get("vessel") or {}).items():
        base = train["runs"][entry["base"]]
        spec = (entry.get("overrides") or {}).get("perceptual") or {}
        groups.setdefault((entry["task"], base.get("method") or base["model"]), []).append(
            {"key": key, "method": entry["method"], "form": spec.get("backbone"), "weight": spec.get("weight")})
    return groups


def _paired(table: pd.DataFrame, variant: str, a: str, b: str, column: str, seed: int) -> dict | None:
    """Mean of a - b over the test subjects both have, with its 95% bootstrap interval over subjects
    (:func:`medrestore.evaluation.scoring.interval`) and the numbers of images and subjects."""
    rows = table[table["variant"] == variant]
    left = rows[rows["method"] == a].set_index("image_id")
    x, y = left[column].align(rows[rows["method"] == b].set_index("image_id")[column], join="inner")
    subjects = subjects_of(left.reset_index()).set_axis(left.index).reindex(x.index).to_numpy()
    d = (x - y).to_numpy(dtype=float)
    if not np.isfinite(d).any():
        return None
    return interval(d, seed, subjects)


def _fmt(d: dict | None, digits: int) -> str:
    if d is None:
        return "–"
    f = f"{{:+.{digits}f}}"
    return f"{f.format(d['mean'])} [{f.format(d['ci95'][0])}, {f.format(d['ci95'][1])}]"


def compare(table: pd.DataFrame, variant: str, plain: str, vessel: list[dict], seed: int) -> list[dict]:
    """Per vessel-aware model: paired differences from the plain model and the verdict."""
    out = []
    for v in vessel:
        diffs = {col: _paired(table, variant, v["method"], plain, col, seed) for col, _, _ in COMPARED}
        kept, psnr = diffs["indep_thin_recall_above_chance"], diffs["psnr_fov"]
        rose = kept is not None and kept["ci95"][0] > 0
        cost = None if psnr is None else -psnr["mean"]
        verdict = ("thin-vessel recall rose" if rose else "no rise in thin-vessel recall") + (
            ""
            if cost is None
            else f" at a PSNR cost of {cost:.2f} dB "
            f"({'below' if cost < PSNR_BUDGET_DB else 'not below'} {PSNR_BUDGET_DB} dB)"
        )
        out.append({**v, "differences": diffs, "recall_rose": rose, "psnr_cost_db": cost,
                    "within_budget": rose and cost is not None and cost < PSNR_BUDGET_DB, "verdict": verdict})
    return out


def table_rows(summary: dict, variant: str, plain: str, results: list[dict],
               conv: dict) -> tuple[list[str], list[list[str]]]:
    header = ["method", "form (weight)", *(t for _, t, _ in COMPARED), "vs plain: thin kept (independent)",
              "vs plain: PSNR in FOV (dB)", "verdict",
              "images / subjects"]
    rows = []
    methods = ["degraded",
               *sorted(m for m, v in summary["methods"].items() if v.get(variant, {}).get("kind") == "baseline"), plain]
    for m in methods + [r["method"] for r in results]:
        st = summary["methods"].get(m, {}).get(variant)
        if st is None:
            continue
        r = next((r for r in results if r["method"] == m), None)
        cells = []
        for col, _, _ in COMPARED:
            if col in st:
                lo, hi = st[col]["ci95"]
                d = 2 if col == "psnr_fov" else 3
                cells.append(f"{st[col]['mean']:.{d}f} [{lo:.{d}f}, {hi:.{d}f}]")
            else:
                cells.append("–")
        form = "plain" if m == plain else (f"{FORMS.get(r['form'], r['form'])} ({r['weight']:g})" if r else st["kind"])
        extra = ([_fmt(r["differences"]["indep_thin_recall_above_chance"], 3), _fmt(r["differences"]["psnr_fov"], 2),
                  r["verdict"]]
                 if r else ["", "", ""])
        size = f"{st['n_images']} / {st['n_subjects']}" if "n_subjects" in st else "–"
        rows.append([label(m, conv, failed_in_summary(summary, variant)), form, *cells, *extra, size])
    return header, rows


def sweep_figure(sweep: dict, summary: dict, variant: str, plain: str) -> bytes | None:
    """PSNR in the FOV against thin vessels kept and against vessels invented (independent
    segmenter): one line per form through its weights, the plain model and baselines as markers."""
    points = [p for p in sweep.get("points", []) if p.get("task") == summary["task"] and p.get("variant") == variant]
    if not points:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6))
    for ax, col, title in ((axes[0], "indep_thin_recall_above_chance", "thin vessels kept above chance (independent)"),
                           (axes[1], "indep_invented_rate", "vessels invented (independent)")):
        for form in sorted({p["form"] for p in points}):
            pts = sorted((p for p in points if p["form"] == form and col in p and "psnr_fov" in p),
                         key=lambda p: p["weight"])
            if not pts:
                continue
            xs, ys = [p[col] for p in pts], [p["psnr_fov"] for p in pts]
            ax.plot(xs, ys, "o-", label=FORMS.get(form, form))
            for p, x, y in zip(pts, xs, ys):
                ax.annotate(f"{p['weight']:g}", (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        plain_psnr = summary["methods"].get(plain, {}).get(variant, {}).get("psnr_fov", {}).get("mean")
        off = []
        for m, st in summary["methods"].items():
            s = st.get(variant, {})
            if (
                col in s
                and "psnr_fov" in s
                and s.get("kind") == "baseline"
                and plain_psnr is not None
                and s["psnr_fov"]["mean"] < plain_psnr - 2.0
            ):
                off.append(f"{m} {s['psnr_fov']['mean']:.1f} dB")  # far below: it would squeeze the sweep into a corner
                continue
            if col in s and "psnr_fov" in s and (m == plain or s.get("kind") == "baseline"):
                ax.plot(s[col]["mean"], s["psnr_fov"]["mean"], marker="*" if m == plain else "s", linestyle="none",
                        color="black" if m == plain else "grey", markersize=10 if m == plain else 6)
                ax.annotate(m, (s[col]["mean"], s["psnr_fov"]["mean"]), fontsize=7, xytext=(3, -9),
                            textcoords="offset points")
        ax.set_xlabel(title + (f"\n(off the chart, more than 2 dB below {plain}: {', '.join(off)})" if off else ""),
                      fontsize=8)
        ax.set_ylabel("PSNR inside the FOV (dB)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{summary['task']} [{variant}]: vessel-term weight sweep", fontsize=9)
    fig.tight_layout()
    return _fig_png(fig)


def sweep_on_split(sweep: dict, patches_dir: Path) -> tuple[dict, str | None]:
    """``sweep`` as it may be drawn beside this evaluation, and why not when it may not: points scored on
    other test images (or on test images the file does not record) than ``patches_dir``'s split are
    not comparable with this evaluation's numbers, so none are drawn."""
    if not sweep.get("points") or not (Path(patches_dir) / "patches.json").is_file():
        return sweep, None
    test_images = read_json(Path(patches_dir) / "patches.json")["splits"]["test"]
    if sweep.get("test_images") == test_images:
        return sweep, None
    where = ("was scored on other test images than" if sweep.get("test_images") else
             "does not record the test images it was scored on, so it cannot be matched with")
    why = (f"The recorded weight sweep ({len(sweep['points'])} points in reports/vessel_sweep.json) {where} this "
           f"evaluation's {len(test_images)}: it is not drawn. Fix: run the sweep again on this split "
           "(docs/pipeline.md, vessel-aware training) and collect it with `medrestore sweep --replace`.")
    return {**sweep, "points": []}, why


def sweep_against_this_run(sweep: dict, summary: dict, variant: str, results: list[dict]) -> str | None:
    """Why the sweep may not be drawn beside this run, or None: a sweep point at one of this run's own
    (method, weight) must score what this run's model scores (same data and code train byte-identical
    models), else the sweep was trained on other data or code than this run's models."""
    methods = summary.get("methods", {})
    for r in results:
        mine = methods.get(r["method"], {}).get(variant, {}).get("psnr_fov", {}).get("mean")
        if mine is None or r.get("weight") is None:
            continue
        for p in sweep.get("points", []):
            same = (p.get("task"), p.get("variant"), p.get("method")) == (summary.get("task"), variant, r["method"])
            if not same or p.get("weight") is None or abs(float(p["weight"]) - float(r["weight"])) >= 1e-12:
                continue
            if abs(float(p["psnr_fov"]) - mine) > 1e-3:
                return (f"The recorded weight sweep (reports/vessel_sweep.json) scores {r['method']} at this run's "
                        f"own weight {r['weight']:g} at {float(p['psnr_fov']):.2f} dB, this run's model at {mine:.2f} "
                        "dB: the sweep was trained on other training data or code than this run's models, so it is "
                        "not drawn. Fix: run the sweep again (docs/pipeline.md, vessel-aware training) and collect "
                        "it with `medrestore sweep --replace`.")
    return None


def vessel_section(params: dict, eval_root: Path, patches_dir: Path, conv_by_task: dict[str, dict], scoring_segmenter,
                   sweep_path: Path | None) -> dict:
    """The section as ``{"md": [...], "html": [...], "figures": [(name, png, caption)], "results": {...}}``
    (empty when params.yaml has no ``train.vessel``)."""
    import html as _html

    from medrestore.report.markup import html_table, md_table

    out = {"md": [], "html": [], "figures": [], "results": {}}
    groups = vessel_groups(params["train"])
    if not groups:
        return out
    sweep = read_json(sweep_path) if sweep_path is not None and Path(sweep_path).is_file() else {"points": []}
    sweep, stale = sweep_on_split(sweep, patches_dir)
    intro = ("Each vessel-aware model is its plain twin trained again with one added loss term (same data, steps and "
             "seed), built on the pipeline's vessel segmenter, frozen. The vessels are judged by an independent "
             "segmenter (another seed, trained on the second observer's masks) and, for comparison, by the loss's own "
             "segmenter. Differences are paired over the test images (mean and 95% bootstrap interval over the test "
             "subjects, both eyes of one person resampled together; each row states its images / subjects); a vessel "
             "term is worth it when the independent thin-vessel recall rises (interval above 0) at a PSNR cost below "
             f"{PSNR_BUDGET_DB} dB.")
    out["md"] += ["## Vessel-aware training", "", intro, ""]
    out["html"].append(f"<h2 id='vessel-aware'>Vessel-aware training</h2><p>{_html.escape(intro)}</p>")
    for (task, plain), runs in sorted(groups.items()):
        eval_dir = Path(eval_root) / task
        if not (eval_dir / "summary.json").is_file():
            continue
        summary = read_json(eval_dir / "summary.json")
        table = pd.read_csv(eval_dir / "per_image.csv")
        present = [r for r in runs if r["method"] in summary["methods"]]
        if plain not in summary["methods"] or not present:
            continue
        conv = conv_by_task.get(task, {})
        for variant in summary["variants"]:
            results = compare(table, variant, plain, present, int(params["seed"]))
            out["results"].setdefault(task, {})[variant] = {
                r["method"]: {k: r[k] for k in ("form", "weight", "recall_rose", "psnr_cost_db", "within_budget",
                                                "verdict")} | {
                    "differences": r["differences"]} for r in results}
            header, rows = table_rows(summary, variant, plain, results, conv)
            out["md"] += [f"### {task} [{variant}]: {plain} and its vessel-aware variants", "", *md_table(header, rows)]
            out["html"].append(
                f"<h3>{_html.escape(task)} [{_html.escape(variant)}]: {_html.escape(plain)} "
                "and its vessel-aware variants</h3>"
                + html_table(header, rows)
            )
            if scoring_segmenter is not None:
                png = vessel_figure(task, eval_dir, patches_dir, summary, scoring_segmenter, converged=conv,
                                    methods=["degraded", plain, *(r["method"] for r in present)],
                                    title=f"{task} [{variant}]: the independent segmenter on {plain} and its "
                                          "vessel-aware variants", with_images=True)
                out["figures"].append((f"{task}_vessel_overlay", png, CAPTION_OVERLAY))
            other_run = sweep_against_this_run(sweep, summary, variant, results)
            png = None if other_run else sweep_figure(sweep, summary, variant, plain)
            if png is not None:
                out["figures"].append((f"{task}_vessel_sweep", png, CAPTION_SWEEP))
            elif other_run or not sweep.get("points"):
                note = other_run or stale or ("No weight sweep recorded yet (reports/vessel_sweep.json has no points): "
                                              "run the sweep of docs/pipeline.md (vessel-aware training) and "
                                              "`medrestore sweep` to draw it.")
                out["md"] += [note, ""]
                out["html"].append(f"<p>{_html.escape(note)}</p>")
    return out
