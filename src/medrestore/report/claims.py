"""The papers' claims, checked against this run's numbers: ``reports/claims.json`` and the report's
claims table.

Each claim says that one method beats another on one metric of one task's test corruption. Its
verdict comes from the per-image scores of the evaluation (``per_image.csv``), never from text:

- ``not run``: a method of the claim is not in this run's evaluation;
- ``failed``: a trained model of the claim scores below its degraded input on the claim's test
  corruption (:mod:`medrestore.evaluation.gates`): it restored nothing, so it says nothing about its method;
- ``not converged``: a trained model of the claim did not converge (:mod:`medrestore.training.convergence`):
  its number says nothing about the paper's method;
- ``reproduced``: the mean difference is in the claimed direction and its 95% bootstrap interval
  over the test subjects (:func:`medrestore.evaluation.scoring.interval`: both eyes of one person resampled
  together) excludes zero;
- ``not reproduced``: otherwise.

The papers are named by the labels of :data:`PAPERS` (README: label, authors, year, title).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medrestore.evaluation.gates import FAILED, failed_in_table
from medrestore.evaluation.metrics import LOWER_IS_BETTER
from medrestore.evaluation.scoring import image_subjects, interval

#: label -> (authors, year, title, seed file)
PAPERS = {
    "Hayee2017": ("F. Hayee, K. Sytwu", 2017, "Image Restoration of Low-Quality Medical-Diagnostic Images", "000"),
    "Krenz2018": ("L. Krenz (advisor N. Rieke)", 2018,
                  "Deep-Learning-based Image Denoising in Ophthalmology (kick-off talk)", "001"),
    "Gondara2016": ("L. Gondara", 2016, "Medical image denoising using convolutional denoising autoencoders", "002"),
    "Zhao2019": ("H. Zhao, B. Yang, L. Cao, H. Li", 2019,
                 "Data-Driven Enhancement of Blurry Retinal Images via Generative Adversarial Networks", "003"),
    "GilZuluaga2021": ("F. H. Gil Zuluaga, F. Bardozzo, J. I. Rios Patino, R. Tagliaferri", 2021,
                       "Blind microscopy image denoising with a deep residual and multiscale encoder/decoder network",
                       "004"),
}


@dataclass(frozen=True)
class Claim:
    paper: str
    claim: str
    task: str
    variant: str
    metric: str
    better: str  # the method the paper finds better
    worse: str


CLAIMS: tuple[Claim, ...] = (
    Claim("Hayee2017", "DnCNN denoises better than the autoencoder with skips (39.96 vs 33.00 dB)", "denoise-g25",
          "s25", "psnr_fov", "dncnn", "redae"),
    Claim("Hayee2017", "the R:G:B = 1:3:2 weighted loss raises green-channel PSNR over plain DnCNN", "denoise-g25",
          "s25", "psnr_green", "dncnn-green", "dncnn"),
    Claim("Hayee2017", "the DnCNN -> x4 reduction -> SRGAN chain scores below DnCNN alone in PSNR (28.84 vs 39.96 dB)",
          "denoise-g25", "s25", "psnr_fov", "dncnn", "dncnn-srgan"),
    Claim("Krenz2018", "LapSRN beats bicubic interpolation at x4", "sr-x4", "x4", "psnr_fov", "lapsrn", "bicubic"),
    Claim("Gondara2016", "the convolutional denoising autoencoder beats the median filter in SSIM", "denoise-g25",
          "s25", "ssim", "cdae", "median"),
    Claim("Gondara2016", "the convolutional denoising autoencoder beats NL-means in SSIM", "denoise-g25", "s25", "ssim",
          "cdae", "nlmeans"),
    Claim("Zhao2019", "feature consistency beats the image-level cycle loss in NIQE", "enhance", "cataract", "niqe",
          "cyclegan-fc", "cyclegan"),
    Claim("Zhao2019", "feature consistency beats the image-level cycle loss in BRISQUE", "enhance", "cataract",
          "brisque", "cyclegan-fc", "cyclegan"),
    Claim("Zhao2019", "feature consistency keeps vessels better than the image-level cycle loss (vessel Dice)",
          "enhance", "cataract", "manual_dice", "cyclegan-fc", "cyclegan"),
    Claim("GilZuluaga2021", "IRUNet beats DnCNN at sigma 25 (blind training)", "denoise-blind", "s25", "psnr_fov",
          "irunet", "dncnn-blind"),
    Claim("GilZuluaga2021", "IRUNet beats DnCNN at sigma 50 (blind training)", "denoise-blind", "s50", "psnr_fov",
          "irunet", "dncnn-blind"),
    Claim("GilZuluaga2021", "IRUNet beats NL-means at sigma 50", "denoise-blind", "s50", "psnr_fov", "irunet",
          "nlmeans"),
)

RULE = ("reproduced: the mean difference is in the claimed direction and its 95% bootstrap interval over the test "
        "subjects (both eyes of one person resampled together) excludes zero; failed: a trained model of the claim "
        "scores below its degraded input in PSNR inside the FOV; not converged: a trained model of the claim did not "
        "converge; not run: a method is not in this run")


def per_image_scores(table: pd.DataFrame, variant: str, method: str, metric: str) -> pd.Series | None:
    """One method's ``metric`` per test image (indexed by image id) on ``variant``; None when absent."""
    rows = table[(table["variant"] == variant) & (table["method"] == method)]
    if rows.empty or metric not in rows or rows[metric].isna().all():
        return None
    return rows.set_index("image_id")[metric].astype(float)


def _interval(values: np.ndarray, seed: int, subjects: list[str] | None = None) -> dict:
    return interval(values, seed, subjects, digits=4)


def check_claim(claim: Claim, table: pd.DataFrame, converged: dict[str, bool], seed: int) -> dict:
    """One claim's verdict from the task's per-image table; ``converged``: trained method -> verdict
    (methods absent from it are baselines)."""
    out = {"paper": claim.paper, "claim": claim.claim, "task": claim.task, "variant": claim.variant,
           "metric": claim.metric,
           "better": claim.better, "worse": claim.worse, "lower_is_better": claim.metric in LOWER_IS_BETTER}
    a, b = per_image_scores(table, claim.variant, claim.better,
                            claim.metric), per_image_scores(table, claim.variant, claim.worse, claim.metric)
    failed = [m for m in (claim.better, claim.worse) if m in failed_in_table(table, claim.variant)]
    if failed and (a is None or b is None):
        return {**out, "values": {}, "verdict": "failed", "why": f"{FAILED}: {', '.join(failed)}"}
    if a is None or b is None:
        missing = [m for m, s in ((claim.better, a), (claim.worse, b)) if s is None]
        return {**out, "values": {}, "verdict": "not run", "why": f"not evaluated: {', '.join(missing)}"}
    a, b = a.align(b, join="inner")
    subjects = [image_subjects(table).get(str(i), str(i)) for i in a.index]
    sign = -1.0 if out["lower_is_better"] else 1.0
    diff = sign * (a.to_numpy() - b.to_numpy())
    out["values"] = {claim.better: _interval(a.to_numpy(), seed, subjects),
                     claim.worse: _interval(b.to_numpy(), seed, subjects)}
    out["difference"] = {**_interval(diff, seed, subjects),
                         "note": "claimed-better minus other, sign turned so that > 0 favours the claim"}
    unconverged = [m for m in (claim.better, claim.worse) if converged.get(m) is False]
    if failed:
        out.update(verdict="failed", why=f"{FAILED}: {', '.join(failed)}")
    elif unconverged:
        out.update(verdict="not converged", why=f"did not converge: {', '.join(unconverged)}")
    elif out["difference"]["mean"] > 0 and out["difference"]["ci95"][0] > 0:
        out.update(verdict="reproduced", why="difference > 0, interval excludes 0")
    else:
        out.update(verdict="not reproduced",
                   why="difference <= 0" if out["difference"]["mean"] <= 0 else "interval includes 0")
    return out


def per_image_tables(eval_root: Path, tasks: Iterable[str]) -> dict[str, pd.DataFrame | None]:
    """Each task's ``per_image.csv`` under ``eval_root``, read once; None where the task was not evaluated."""
    out: dict[str, pd.DataFrame | None] = {}
    for task in sorted(set(tasks)):
        path = Path(eval_root) / task / "per_image.csv"
        out[task] = pd.read_csv(path) if path.is_file() else None
    return out


def check_claims(eval_root: Path, converged: dict[str, dict[str, dict]], seed: int,
                 claims: tuple[Claim, ...] = CLAIMS) -> list[dict]:
    """Every claim, judged on the task's ``per_image.csv`` under ``eval_root`` (``not run`` where the
    task was not evaluated); ``converged``: task -> trained method -> convergence verdict (the report's
    :func:`medrestore.report.policy.task_convergence`)."""
    results = []
    tables = per_image_tables(eval_root, {c.task for c in claims})
    for c in claims:
        table = tables[c.task]
        if table is None:
            results.append({**asdict(c), "values": {}, "verdict": "not run", "why": f"task {c.task} not evaluated"})
            continue
        verdicts = converged.get(c.task, {})
        results.append(check_claim(c, table,
                                   {m: bool(verdicts[m]["converged"]) for m in (c.better, c.worse) if m in verdicts},
                                   seed))
    return results


def sample_size(d: dict | None) -> str:
    """What an interval rests on, as the report prints it: "8 / 4" (images / subjects)."""
    if not d or "n_images" not in d:
        return "–"
    return f"{d['n_images']} / {d['n_subjects']}"


def _cell(method: str, values: dict) -> str:
    v = values.get(method)
    return f"{method}: {v['mean']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]" if v else method


def claims_rows(results: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["paper", "claim", "task [test]", "metric", "claimed better", "other", "difference [95% CI]",
              "images / subjects", "verdict"]
    rows = []
    for r in results:
        vals = r.get("values") or {}
        d = r.get("difference")
        diff = f"{d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]" if d else "–"
        rows.append([r["paper"], r["claim"], f"{r['task']} [{r['variant']}]", r["metric"], _cell(r["better"], vals),
                     _cell(r["worse"], vals), diff,
                     sample_size(d), r["verdict"]])
    return header, rows
