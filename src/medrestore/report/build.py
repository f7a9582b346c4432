"""The published comparison: ``reports/report.md``, a self-contained ``reports/index.html``,
``reports/metrics.json`` (every number, per method), ``reports/headline.json`` (read by ``dvc metrics show``),
``reports/claims.json``, ``reports/targets.json`` and the figures
they show, assembled from the evaluation's summaries, the models' curves and ``dvc.lock``."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from medrestore.core.io import (
    read_json,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from medrestore.evaluation.gates import failed_in_summary
from medrestore.report.claims import RULE, check_claims, claims_rows
from medrestore.report.external import external_section
from medrestore.report.figures import (
    CAPTIONS,
    cost_figure,
    crops_figure,
    curves_figure,
    error_maps_figure,
    sigma_csv,
    sigma_figure,
    small_png,
    vessel_figure,
)
from medrestore.report.headline import best_psnr_fov
from medrestore.report.markup import html_page, html_table, md_table
from medrestore.report.performance import performance_section
from medrestore.report.policy import banner, best_models, champion_lines, task_convergence
from medrestore.report.tables import (
    best_rows,
    convergence_rows,
    cost_rows,
    headline_numbers,
    lineage_rows,
    paired_rows,
    sorted_methods,
    task_table,
)
from medrestore.report.targets import RULE as TARGET_RULE
from medrestore.report.targets import check_targets, targets_rows
from medrestore.report.text import (
    CONVERGENCE_TEXT,
    methods_paragraph,
    segmenter_section,
)
from medrestore.report.vessel_aware import vessel_section
from medrestore.tracking.dvclock import lock_stages

#: Where the figures go, under the report's folder: full size (DVC-cached; inline in index.html) and the
#: small copies report.md links to (in git, so that report.md shows its figures where git is read).
FIGURES, SMALL_FIGURES = "figures", "report_figures"


def _add_figure(out_dir: Path, md: list[str], html_parts: list[str], name: str, alt: str, png: bytes,
                caption: str) -> None:
    """Write figure ``name`` full size and as its small copy (:func:`small_png`); report.md shows the
    small copy, index.html the full figure inline."""
    write_bytes_atomic(out_dir / FIGURES / f"{name}.png", png)
    rel = f"{SMALL_FIGURES}/{name}.png"
    write_bytes_atomic(out_dir / rel, small_png(png))
    md += [f"![{alt}]({rel})", "", f"*{caption}.*", ""]
    b64 = base64.b64encode(png).decode()
    html_parts.append(f"<figure><img alt='{html.escape(alt, quote=True)}' "
                      f"src='data:image/png;base64,{b64}'><figcaption>{html.escape(caption)}.</figcaption></figure>")


def _opening(params: dict, methods: str, conv_by_task: dict, md: list[str], html_parts: list[str]) -> None:
    """The title, the banner (:func:`banner`, when it has one) and the ``methods`` paragraph."""
    first = banner(params, conv_by_task)
    md += ["# medrestore comparison report", ""] + ([first, ""] if first else []) + ["## Methods", "", methods, ""]
    html_parts.append("<h1>medrestore comparison report</h1>")
    if first:
        html_parts.append(f"<p class='banner'><strong>{html.escape(first.strip('*'))}</strong></p>")
    html_parts.append(f"<h2>Methods</h2><p>{html.escape(methods)}</p>")


def _verdict_counts(checks: list[dict], verdicts: tuple[str, ...]) -> str:
    """How many of ``checks`` got each of ``verdicts``, as "3 met, 1 missed, ..."."""
    return ", ".join(f"{sum(c['verdict'] == v for c in checks)} {v}" for v in verdicts)


def _claims_and_targets(params: dict, eval_root: Path, models_root: Path, conv_by_task: dict, out_dir: Path,
                        md: list[str], html_parts: list[str]) -> None:
    """The "Paper claims" and "Quality targets" sections; writes ``claims.json`` and ``targets.json``."""
    claims = check_claims(Path(eval_root), conv_by_task, int(params["seed"]))
    write_json_atomic(out_dir / "claims.json", claims)
    header, rows = claims_rows(claims)
    counts = _verdict_counts(claims, ("reproduced", "not reproduced", "failed", "not converged", "not run"))
    intro = f"What the papers claim, checked against this run's test images ({counts}). Rule: {RULE}."
    md += ["## Paper claims", "", intro, "", *md_table(header, rows)]
    html_parts.append(f"<h2 id='claims'>Paper claims</h2><p>{html.escape(intro)}</p>" + html_table(header, rows))
    targets = check_targets(Path(eval_root), conv_by_task, int(params["seed"]), Path(models_root))
    write_json_atomic(out_dir / "targets.json", targets)
    header, rows = targets_rows(targets)
    counts = _verdict_counts(targets, ("met", "missed", "failed", "not converged", "not run"))
    intro = (f"The levels this report must reach to speak for the papers' methods ({counts}). Rule: {TARGET_RULE}. "
             "Each task's convergence table and training curves below show the curves behind the training column.")
    md += ["## Quality targets", "", intro, "", *md_table(header, rows)]
    html_parts.append(f"<h2 id='targets'>Quality targets</h2><p>{html.escape(intro)}</p>" + html_table(header, rows))


def _best_methods(params: dict, tasks: list[str], eval_root: Path, models_root: Path, conv_by_task: dict,
                  md: list[str], html_parts: list[str]) -> None:
    """The "Best methods" section: the best of each task and its champion (the registry's alias)."""
    header, rows = best_rows(Path(eval_root), tasks, conv_by_task)
    among = ("Among baselines and converged models that score above their degraded input (a model below it failed "
             "there) only.")
    champions = "Champion of each task (the registry's alias): " + "; ".join(
        champion_lines(tasks,
                       best_models(Path(eval_root), tasks, models_root=Path(models_root), train=params["train"]))) + "."
    md += ["## Best methods", "", among, "", *md_table(header, rows), champions, ""]
    html_parts.append(
        f"<h2 id='best'>Best methods</h2><p>{html.escape(among)}</p>"
        + html_table(header, rows)
        + f"<p>{html.escape(champions)}</p>"
    )


def _variant_tables(task: str, summary: dict, conv: dict, md: list[str], html_parts: list[str]) -> dict:
    """Each test corruption's table of ``task`` and its paired comparison; returns the task's headline numbers
    (:func:`headline_numbers`), by method and variant."""
    numbers: dict = {}
    for variant in summary["variants"]:
        header, rows = task_table(summary, variant, conv)
        md += [f"### {task}, test corruption `{variant}`", "", *md_table(header, rows)]
        html_parts.append(
            f"<h3>test corruption <code>{html.escape(variant)}</code></h3>" + html_table(header, rows)
        )
        paired = paired_rows(summary, variant, conv)
        if paired:
            md += [f"Paired comparison with the best classical baseline, `{variant}`:", "", *md_table(*paired)]
            html_parts.append(
                f"<p>Paired comparison with the best classical baseline, <code>{html.escape(variant)}</code>:</p>"
                + html_table(*paired)
            )
        failed = failed_in_summary(summary, variant)
        for m, v in summary["methods"].items():
            trained = v[variant].get("kind") == "model"
            numbers.setdefault(m, {})[variant] = headline_numbers(
                v[variant], conv.get(m), (m in failed) if trained else None
            )
    return numbers


def _task_records(task: str, summary: dict, conv: dict, stages: dict, models_root: Path, md: list[str],
                  html_parts: list[str]) -> None:
    """The lineage of ``task``'s methods, its models' convergence (when it has models) and its costs (when
    recorded)."""
    methods = [m for m in sorted_methods(summary, summary["variants"][0]) if m != "clean"]
    header, rows = lineage_rows(task, methods, summary, stages, Path(models_root), conv)
    md += [f"### {task}: lineage", "", *md_table(header, rows)]
    html_parts.append(f"<h3>{html.escape(task)}: lineage</h3>" + html_table(header, rows, "lineage"))
    if conv:
        header, rows = convergence_rows(conv, Path(models_root) / task)
        md += [f"### {task}: convergence", "", CONVERGENCE_TEXT, "", *md_table(header, rows)]
        html_parts.append(
            f"<h3>{html.escape(task)}: convergence</h3><p>{html.escape(CONVERGENCE_TEXT)}</p>"
            + html_table(header, rows)
        )
    costs = cost_rows(summary, conv)
    if costs:
        md += [f"### {task}: cost", "", *md_table(*costs)]
        html_parts.append(f"<h3>{html.escape(task)}: cost</h3>" + html_table(*costs))


def _task_figures(task: str, summary: dict, conv: dict, eval_dir: Path, patches_dir: Path, models_root: Path,
                  segmenter, out_dir: Path, md: list[str], html_parts: list[str]) -> None:
    """``task``'s figures (those it has data for) and its sigma curve, ``plots/<task>_sigma.csv`` (when it has
    one)."""
    figures = [
        ("crops", crops_figure(task, eval_dir, patches_dir, summary, converged=conv)),
        ("errors", error_maps_figure(task, eval_dir, patches_dir, summary, converged=conv)),
        ("vessels", vessel_figure(task, eval_dir, patches_dir, summary, segmenter, converged=conv)),
        ("sigma", sigma_figure(task, summary)),
        ("cost", cost_figure(task, summary)),
        ("curves", curves_figure(task, Path(models_root) / task)),
    ]
    curve = sigma_csv(summary)
    if curve:
        write_text_atomic(out_dir / "plots" / f"{task}_sigma.csv", curve)
    for kind, png in figures:
        if png is not None:
            _add_figure(out_dir, md, html_parts, f"{task}_{kind}", f"{task} {kind}", png, CAPTIONS[kind])


def _task_section(task: str, eval_root: Path, patches_dir: Path, models_root: Path, conv: dict, stages: dict,
                  segmenter, out_dir: Path, md: list[str], html_parts: list[str]) -> dict:
    """The section of one task, from its evaluation's ``summary.json``: its tables
    (:func:`_variant_tables`, :func:`_task_records`) and figures (:func:`_task_figures`); returns its headline
    numbers."""
    eval_dir = Path(eval_root) / task
    summary = read_json(eval_dir / "summary.json")
    md += [f"## {task}", ""]
    html_parts.append(f"<h2 id='{html.escape(task)}'>{html.escape(task)}</h2>")
    numbers = _variant_tables(task, summary, conv, md, html_parts)
    _task_records(task, summary, conv, stages, models_root, md, html_parts)
    _task_figures(task, summary, conv, eval_dir, patches_dir, models_root, segmenter, out_dir, md, html_parts)
    return numbers


def _closing_sections(params: dict, tasks: list[str], eval_root: Path, patches_dir: Path, conv_by_task: dict,
                      out_dir: Path, md: list[str], html_parts: list[str], *, scoring_segmenter, sweep_path,
                      external_root, bench_path) -> None:
    """The "Another camera" section, the vessel-aware section (writes ``vessel_aware.json``, even when empty) and the
    performance section (when ``bench_path`` exists)."""
    ext_md, ext_html = external_section(external_root, tasks, conv_by_task)  # "Another camera" (evaluate_external)
    md += ext_md
    html_parts += ext_html
    vessel = vessel_section(params, Path(eval_root), patches_dir, conv_by_task, scoring_segmenter, sweep_path)
    md += vessel["md"]
    html_parts += vessel["html"]
    for name, png, caption in vessel["figures"]:
        _add_figure(out_dir, md, html_parts, name, name, png, caption)
    write_json_atomic(out_dir / "vessel_aware.json", vessel["results"])  # a DVC output: written even when empty
    if bench_path is not None and Path(bench_path).is_file():
        perf_md, perf_html = performance_section(read_json(Path(bench_path)), Path(bench_path).name)
        md += perf_md
        html_parts.append(perf_html)


def _write_pages(out_dir: Path, md: list[str], html_parts: list[str], headline: dict) -> None:
    """Write ``index.html``, ``report.md``, ``metrics.json`` and ``headline.json``."""
    write_text_atomic(out_dir / "index.html", html_page(html_parts))
    write_text_atomic(out_dir / "report.md", "\n".join(md))
    write_json_atomic(out_dir / "metrics.json", headline)
    # the declared DVC metrics: a terminal's width
    write_json_atomic(out_dir / "headline.json", best_psnr_fov(headline))


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
    scoring_segmenter=None,
    sweep_path: Path | None = None,
    external_root: Path | None = None,
) -> dict:
    """Write the report. ``segmenter`` is the pipeline's vessel segmenter (Frangi when None);
    ``bench_path``: ``make bench``'s ``bench.json``, shown as the performance section when it exists;
    ``scoring_segmenter``: the independent vessel segmenter and ``sweep_path`` the collected weight sweep, for
    the vessel-aware section (:mod:`medrestore.report.vessel_aware`); ``external_root``: the
    evaluate_external stage's folder, shown as "Another camera" for the tasks it holds."""
    if segmenter is None:
        from medrestore.vessels import VesselSegmenter

        segmenter = VesselSegmenter(None)
    out_dir = Path(out_dir)
    stages = lock_stages(Path(lock_path))
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)  # a DVC plots output: exists even with no sigma task
    methods = methods_paragraph(params, Path(models_root))
    conv_by_task = {t: task_convergence(models_root, t, params["train"]) for t in tasks}
    md: list[str] = []
    html_parts: list[str] = []
    _opening(params, methods, conv_by_task, md, html_parts)
    _claims_and_targets(params, eval_root, models_root, conv_by_task, out_dir, md, html_parts)
    _best_methods(params, tasks, eval_root, models_root, conv_by_task, md, html_parts)
    seg_md, seg_html = segmenter_section(segmenter_dir)
    md += seg_md
    html_parts.append(seg_html)
    headline: dict = {}
    for task in tasks:
        numbers = _task_section(task, eval_root, patches_dir, models_root, conv_by_task[task], stages, segmenter,
                                out_dir, md, html_parts)
        if numbers:  # a task whose summary has no methods has no headline entry
            headline[task] = numbers
    _closing_sections(params, tasks, eval_root, patches_dir, conv_by_task, out_dir, md, html_parts,
                      scoring_segmenter=scoring_segmenter, sweep_path=sweep_path, external_root=external_root,
                      bench_path=bench_path)
    _write_pages(out_dir, md, html_parts, headline)
    return headline
