"""The report's "Another camera" section: each task's models and baselines on photographs from
other cameras than the training set's (the evaluate_external stage, :mod:`medrestore.evaluation.external`),
one table per task: PSNR and SSIM in the FOV, mean and 95 % interval over the images, for all images,
the recoloured test images and the sample photograph."""

from __future__ import annotations

import html
from pathlib import Path

from medrestore.core.io import read_json
from medrestore.report.markup import html_table, md_table
from medrestore.report.policy import eligible, label
from medrestore.report.tables import KIND_ORDER, _fmt

COLUMNS = (("all", "psnr_fov", "PSNR FOV, all (dB)"), ("all", "ssim_fov", "SSIM FOV, all"),
           ("recoloured", "psnr_fov", "PSNR FOV, recoloured (dB)"), ("sample", "psnr_fov", "PSNR FOV, sample (dB)"))
INTRO = ("Denoisers on photographs from other cameras than CHASE_DB1's: each test image recoloured once to another "
         "camera's channel means inside the FOV (blue 30-60, green 80-120; profile and gammas seeded per image; a "
         "channel gained at most x2 on its own, the rest borrowed from green, so that the clean reference carries no "
         "blown-up sensor noise) and "
         "scikit-image's fundus photograph, prepared as the test images, all degraded by the task's {variant} "
         "corruption. Mean [95 % interval] over the images; best per column in bold (baselines and converged models).")


def external_table(summary: dict, converged: dict[str, dict] | None = None) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of one task's external evaluation, the noisy input first."""
    methods = summary["methods"]
    order = sorted(methods, key=lambda m: (KIND_ORDER.get(methods[m]["kind"], 9), m))
    cols = [(g, m, t) for g, m, t in COLUMNS if any(m in methods[k].get(g, {}) for k in order)]
    best = {}
    for g, m, _ in cols:
        cands = {
            k: methods[k][g][m]["mean"]
            for k in order
            if eligible(k, methods[k]["kind"], converged) and m in methods[k].get(g, {})
        }
        if cands:
            best[(g, m)] = max(cands, key=cands.get)
    rows = []
    for k in order:
        cells = []
        for g, m, _ in cols:
            text = _fmt(methods[k].get(g), m)
            cells.append(f"**{text}**" if best.get((g, m)) == k else text)
        rows.append([label(k, converged), methods[k]["kind"], *cells])
    return ["method", "kind", *[t for _, _, t in cols]], rows


def external_section(root: Path | None, tasks: list[str], conv_by_task: dict[str, dict]) -> tuple[list[str], list[str]]:
    """Markdown lines and HTML parts of the section; empty when no task has an external evaluation."""
    found = [t for t in tasks if root is not None and (Path(root) / t / "summary.json").is_file()]
    if not found:
        return [], []
    md, parts = ["## Another camera", ""], ["<h2 id='another-camera'>Another camera</h2>"]
    for task in found:
        summary = read_json(Path(root) / task / "summary.json")
        header, rows = external_table(summary, conv_by_task.get(task))
        intro = INTRO.format(variant=summary.get("variant", ""))
        md += [f"### {task}", "", intro, "", *md_table(header, rows), ""]
        parts.append(f"<h3>{html.escape(task)}</h3><p>{html.escape(intro)}</p>" + html_table(header, rows))
    return md, parts
