"""The quality the standard report must reach, checked against this run's numbers:
``reports/targets.json`` and the report's "Quality targets" table.

A target says that one method (or the task's best converged trained model, :data:`BEST`) reaches a
level set by another: ``subject - factor * reference >= margin`` on the mean over the people of the
test images (each person's images averaged first; turned for metrics where lower is better, so
that ``>= margin`` always means "reached"). The verdict comes from the per-image scores of the evaluation
(``per_image.csv``), never from text:

- ``met`` / ``missed``: the mean difference is at least / below the margin (its 95% bootstrap
  interval over the test subjects, :func:`medrestore.evaluation.scoring.interval`, is shown beside it);
- ``failed``: a trained model of the target scores below its degraded input on the target's test
  corruption (:mod:`medrestore.evaluation.gates`); :data:`BEST` never stands for such a model;
- ``not converged``: a trained model of the target did not converge, so its number is the training
  budget's and the target is neither met nor missed by the method; the row says how far it trained;
- ``not run``: a method of the target is not in this run.

Beside each verdict, ``training`` says how far the trained models of the target went (steps, gain
over the last quarter, the convergence verdict): a converged model that misses a target will not
reach it with more steps of its schedule; one that did not converge needs more.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from medrestore.core.io import read_json
from medrestore.evaluation.gates import FAILED, NO_CHAMPION, failed_in_table
from medrestore.evaluation.metrics import BEST_BY, LOWER_IS_BETTER
from medrestore.evaluation.scoring import image_subjects, interval
from medrestore.report.claims import per_image_scores, per_image_tables, sample_size

#: Stands for the task's trained model with the highest mean :data:`~medrestore.evaluation.metrics.BEST_BY`
#: (PSNR inside the FOV) on the target's test corruption, among converged models above their input only.
BEST = "best converged model"


@dataclass(frozen=True)
class Target:
    target: str
    source: str  # where the level comes from (a seed paper's result)
    task: str
    variant: str
    metric: str
    subject: str  # a method, or BEST
    reference: str
    factor: float = 1.0
    margin: float = 0.0


TARGETS: tuple[Target, ...] = (
    Target("the best learned denoiser at least CBM3D + 2.0 dB", "Hayee2017: DnCNN 39.96 dB", "denoise-g25", "s25",
           "psnr_fov", BEST, "bm3d", margin=2.0),
    Target("DnCNN at least CBM3D", "Hayee2017", "denoise-g25", "s25", "psnr_fov", "dncnn", "bm3d"),
    Target("DnCNN above NL-means", "Hayee2017", "denoise-g25", "s25", "psnr_fov", "dncnn", "nlmeans"),
    Target("DnCNN above REDAE", "Hayee2017: 39.96 vs 33.00 dB", "denoise-g25", "s25", "psnr_fov", "dncnn", "redae"),
    Target("DnCNN-green above DnCNN in green-channel PSNR", "Hayee2017", "denoise-g25", "s25", "psnr_green_fov",
           "dncnn-green", "dncnn"),
    Target("IRUNet (blind) above NL-means at sigma 50", "GilZuluaga2021", "denoise-blind", "s50", "psnr_fov", "irunet",
           "nlmeans"),
    Target("IRUNet (blind) within 0.3 dB of NL-means at sigma 25", "GilZuluaga2021", "denoise-blind", "s25", "psnr_fov",
           "irunet", "nlmeans", margin=-0.3),
    Target("LapSRN above bicubic by at least 0.3 dB at x4", "Krenz2018", "sr-x4", "x4", "psnr_fov", "lapsrn", "bicubic",
           margin=0.3),
    Target("the best denoiser keeps at least half of the clean image's thin vessels (above chance, vs the manual mask)",
           "vessels",
           "denoise-g25", "s25", "manual_thin_recall_above_chance", BEST, "clean", factor=0.5),
    Target("the best denoiser invents at most half as many vessel pixels as the noisy input", "vessels",
           "denoise-g25", "s25", "manual_invented_rate", BEST, "degraded", factor=0.5),
)

RULE = ("met: the mean over the test subjects (each subject's images averaged first) of (model - factor x reference), "
        "turned where lower is better, is at least the margin; failed: a trained model of the target scores below its "
        "degraded input; not converged: a trained model of the target did not converge (its number is the budget's); "
        "the training column says how far each trained model went")


def _means(table: pd.DataFrame, variant: str, metric: str, kinds: tuple[str, ...]) -> dict[str, float]:
    rows = table[(table["variant"] == variant) & table["kind"].isin(kinds)] if "kind" in table else table.iloc[0:0]
    if metric not in rows:
        return {}
    return {m: float(v) for m, v in rows.groupby("method")[metric].mean().dropna().items()}


def best_model(table: pd.DataFrame, variant: str, converged: dict[str, dict]) -> str | None:
    """The converged trained model with the highest mean :data:`BEST_BY` on ``variant``, among those
    not below the degraded input there."""
    failed = failed_in_table(table, variant)
    scores = {m: v for m, v in _means(table, variant, BEST_BY, ("model",)).items()
              if converged.get(m, {}).get("converged", True) and m not in failed}
    return max(sorted(scores), key=scores.get) if scores else None


def training_note(method: str, status: dict | None) -> str | None:
    """How far a trained model went: steps, the gain over its last quarter and the verdict."""
    if status is None:
        return None
    steps = status.get("steps")
    gain = status.get("last_quarter_gain_db")
    went = f"{steps} steps" if steps is not None else "trained"
    went += f", {gain:+.2f} dB over the last quarter" if gain is not None else ""
    if status["converged"]:
        note = f"; {status['note']}" if status.get("note") else ""
        return f"{method}: converged ({went}{note}): more steps of this schedule buy < 0.2 dB"
    return f"{method}: not converged ({went}; {status.get('why', 'still improving')})"


def check_target(target: Target, table: pd.DataFrame, converged: dict[str, dict], seed: int) -> dict:
    """One target's verdict from the task's per-image table; ``converged``: trained method -> the
    report's convergence record (``converged``, ``why``, ``steps``, ``last_quarter_gain_db``)."""
    out = {**asdict(target), "lower_is_better": target.metric in LOWER_IS_BETTER}
    subject = best_model(table, target.variant, converged) if target.subject == BEST else target.subject
    out["subject_method"] = subject
    if subject is None:
        trained = sorted(converged)
        above = any(v.get("converged") for v in converged.values())  # some converged, and all of those failed
        return {
            **out,
            "verdict": ("failed" if above else "not converged") if trained else "not run",
            "values": {},
            "why": (NO_CHAMPION if above else "no trained model of the task converged")
            if trained
            else "no trained model in this run",
            "training": [n for n in (training_note(m, converged[m]) for m in trained) if n],
        }
    a, b = per_image_scores(table, target.variant, subject,
                            target.metric), per_image_scores(table, target.variant, target.reference, target.metric)
    if a is None or b is None:
        missing = [m for m, s in ((subject, a), (target.reference, b)) if s is None]
        return {**out, "values": {}, "verdict": "not run", "why": f"not evaluated: {', '.join(missing)}",
                "training": []}
    a, b = a.align(b, join="inner")
    sign = -1.0 if out["lower_is_better"] else 1.0
    diff = sign * (a.to_numpy() - target.factor * b.to_numpy())
    subjects = [image_subjects(table).get(str(i), str(i)) for i in a.index]
    out["values"] = {subject: round(float(a.mean()), 4), target.reference: round(float(b.mean()), 4)}
    out["difference"] = {**interval(diff, seed, subjects, digits=4),
                         "note": "subject - factor x reference, turned so that > 0 is better"}
    trained = [m for m in (subject, target.reference) if m in converged]
    out["training"] = [n for n in (training_note(m, converged[m]) for m in trained) if n]
    unconverged = [m for m in trained if not converged[m]["converged"]]
    failed = [m for m in (subject, target.reference) if m in failed_in_table(table, target.variant)]
    if failed:
        out.update(verdict="failed", why=f"{FAILED}: {', '.join(failed)}")
    elif unconverged:
        out.update(verdict="not converged", why=f"did not converge: {', '.join(unconverged)}")
    elif out["difference"]["mean"] >= target.margin:
        out.update(verdict="met", why=f"{out['difference']['mean']:+.3f} >= {target.margin:+.3f}")
    else:
        out.update(verdict="missed", why=f"{out['difference']['mean']:+.3f} < {target.margin:+.3f}")
    return out


def check_targets(eval_root: Path, conv_by_task: dict[str, dict[str, dict]], seed: int, models_root: Path | None = None,
                  targets: tuple[Target, ...] = TARGETS) -> list[dict]:
    """Every target, judged on its task's ``per_image.csv`` under ``eval_root``; ``conv_by_task``:
    task -> trained method -> convergence record (:func:`medrestore.report.policy.task_convergence`),
    completed with each model's steps from ``models_root/TASK/METHOD/metrics.json``."""
    results = []
    tables = per_image_tables(eval_root, {t.task for t in targets})
    for t in targets:
        if tables[t.task] is None:
            results.append({**asdict(t), "values": {}, "verdict": "not run", "why": f"task {t.task} not evaluated",
                            "training": []})
            continue
        conv = {}
        for m, v in conv_by_task.get(t.task, {}).items():
            metrics = Path(models_root) / t.task / m / "metrics.json" if models_root is not None else None
            steps = read_json(metrics).get("steps") if metrics is not None and metrics.is_file() else None
            conv[m] = {**v, "steps": steps}
        results.append(check_target(t, tables[t.task], conv, seed))
    return results


def targets_rows(results: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["target", "task [test]", "metric", "values", "difference - margin [95% CI]", "images / subjects",
              "verdict", "training"]
    rows = []
    for r in results:
        vals = ", ".join(f"{m}: {v:.3f}" for m, v in (r.get("values") or {}).items()) or "–"
        d = r.get("difference")
        diff = "–"
        if d:
            m = r["margin"]
            diff = f"{d['mean'] - m:+.3f} [{d['ci95'][0] - m:+.3f}, {d['ci95'][1] - m:+.3f}]"
        rows.append([r["target"], f"{r['task']} [{r['variant']}]", r["metric"], vals, diff, sample_size(d),
                     r["verdict"], "; ".join(r.get("training") or []) or "–"])
    return header, rows
