"""The report's policy: which trained models converged (:func:`task_convergence`), and which method
may be called best. A model that did not converge, or that failed on a test corruption (scored below
its degraded input there: :mod:`medrestore.evaluation.gates`), is marked wherever it appears and is never called
best there; "best" is judged on :data:`medrestore.evaluation.metrics.BEST_BY` (PSNR inside the field of view).
A task's champion (:func:`best_models`) is a converged trained model that failed on none of its test
corruptions; a task without one gets none (:data:`~medrestore.evaluation.gates.NO_CHAMPION`)."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np

from medrestore.core.io import read_json
from medrestore.evaluation.gates import FAILED, NO_CHAMPION, below_input_in_summary, failed_in_summary
from medrestore.evaluation.metrics import BEST_BY

NOT_CONVERGED = "not converged"


def label(method: str, converged: dict[str, dict] | None, failed: Collection[str] = ()) -> str:
    """A method's name in a table: trained models that did not converge say so in every row, and
    those in ``failed`` (:func:`medrestore.evaluation.gates.failed_in_summary`) say that they scored below their
    input."""
    verdict = (converged or {}).get(method)
    marks = [NOT_CONVERGED] if verdict is not None and not verdict["converged"] else []
    marks += [FAILED] if method in failed else []
    return f"{method} ({'; '.join(marks)})" if marks else method


# five times the plateau rule's 0.2 dB: a fine-tuning that moved its start this far is its own run
OWN_RUN_GAIN_DB = 1.0


def task_convergence(models_root: Path | None, task: str, train: dict | None = None) -> dict[str, dict]:
    """Trained method -> whether the model converged, as the report judges it:

    - its own run: :func:`medrestore.training.convergence.model_convergence` of its curve (a gain
      below ``MIN_GAIN_DB`` over the last quarter and no fall of that much at the end; also in the
      model's ``metrics.json`` as ``converged``);
    - with ``train`` (params.yaml's ``train``): a model trained on another's outputs (``train.chains``
      ``first``) converged only if that one did too, since its data are the other's outputs; a model
      fine-tuned from another (``train.finetune`` ``init``) likewise, unless its own run moved it: best
      validation PSNR at least ``OWN_RUN_GAIN_DB`` above its first validation before flattening. A
      fine-tuning that stays near its start (a flat curve from an unconverged model) carries its start's
      number and verdict; one that climbed several dB and then flattened found its own plateau.
    """
    from medrestore.training.convergence import curve_points, model_convergence

    root = Path(models_root) if models_root is not None else None
    memo: dict[tuple[str, str], dict | None] = {}

    def base_of(t: str, method: str) -> tuple[str, str, str] | None:
        for entry in ((train or {}).get("finetune") or {}).values():
            if entry.get("task") == t and entry.get("method", entry.get("model")) == method and "init" in entry:
                bt, _, bm = str(entry["init"]).partition("/")
                return bt, bm, "finetune"
        for entry in ((train or {}).get("chains") or {}).values():
            if entry.get("task") == t and entry.get("method", entry.get("model")) == method:
                return t, entry["first"], "chain"
        return None

    def verdict(t: str, method: str, seen: tuple = ()) -> dict | None:
        if (t, method) in memo:
            return memo[(t, method)]
        folder = root / t / method if root is not None else None
        own = model_convergence(folder) if folder is not None else None
        if own is None:
            memo[(t, method)] = None
            return None
        out = {**own, "run_converged": own["converged"]}  # the run's own rule (plateau, no fall at the end)
        base = base_of(t, method)
        if base is not None and base[:2] not in seen:
            b = verdict(*base[:2], seen=(*seen, (t, method)))
            if b is not None and not b["converged"] and out["converged"]:
                points = [p for _, p in curve_points(folder / "curve.csv")]
                own_gain = max(points) - points[0]
                if base[2] == "finetune" and own_gain >= OWN_RUN_GAIN_DB:
                    out["note"] = (f"starts from {base[0]}/{base[1]}, which did not converge; its own run gained "
                                   f"{own_gain:.1f} dB over its first validation, then flattened")
                else:
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


def eligible(method: str, kind: str, converged: dict[str, dict] | None, failed: Collection[str] = ()) -> bool:
    """Whether a method may be called best: baselines and converged trained models that are not in
    ``failed`` (below their input on this test corruption:
    :func:`medrestore.evaluation.gates.below_input_in_summary`)."""
    if kind == "baseline":
        return method not in failed
    verdict = (converged or {}).get(method)
    return kind == "model" and (verdict is None or bool(verdict["converged"])) and method not in failed


def banner(params: dict, conv_by_task: dict[str, dict[str, dict]]) -> str | None:
    """The report's first line when its numbers are not claims about the papers' methods."""
    profile = params["train"].get("profile", "standard")
    runs = [(t, m) for t, c in conv_by_task.items() for m, v in c.items() if not v["converged"]]
    total = sum(len(c) for c in conv_by_task.values())
    if profile == "quick":
        return (f"**Quick tour (train.profile: quick): the models are undertrained ({len(runs)} of {total} did not "
                "converge); nothing in this report is to be concluded about the methods.**")
    if runs:
        return (f"**{len(runs)} of {total} trained models did not converge ({', '.join(f'{t}/{m}' for t, m in runs)}): "
                "their rows are marked and they make no claim about their papers' methods.**")
    return None


def best_by(summary: dict, variant: str, conv: dict, metric: str = BEST_BY) -> str | None:
    """The baseline or converged model not below its input with the highest mean ``metric`` on one
    test corruption, as ``"name (value dB)"``; None when no method qualifies."""
    failed = below_input_in_summary(summary, variant)
    scores = {m: v[variant][metric]["mean"] for m, v in summary["methods"].items()
              if variant in v and metric in v[variant] and eligible(m, v[variant]["kind"], conv, failed)}
    if not scores:
        return None
    top = max(sorted(scores), key=scores.get)
    return f"{top} ({scores[top]:.2f} dB)"


def best_on_vessels(summary: dict, variant: str, conv: dict) -> str | None:
    """The baseline or converged model not below its input that keeps the most thin vessels (recall above chance) among
    those that keep some (the 95% interval of that recall above zero) and invent at most half as large
    a share of vessel pixels as the degraded input does; None when no method qualifies."""
    prefix = (
        "manual"
        if any("manual_thin_recall_above_chance" in v.get(variant, {}) for v in summary["methods"].values())
        else "ref"
    )
    kept, invented = f"{prefix}_thin_recall_above_chance", f"{prefix}_invented_rate"
    floor = summary["methods"].get("degraded", {}).get(variant, {}).get(invented, {}).get("mean")
    failed = below_input_in_summary(summary, variant)
    cands = {}
    for m, v in summary["methods"].items():
        st = v.get(variant, {})
        if (kept in st and invented in st and eligible(m, st["kind"], conv, failed) and st[kept]["ci95"][0] > 0
                and (floor is None or st[invented]["mean"] <= floor / 2)):
            cands[m] = (st[kept]["mean"], st[invented]["mean"])
    if not cands:
        return None
    top = max(sorted(cands), key=lambda m: cands[m][0])
    return f"{top} (kept {cands[top][0]:.3f}, invented {cands[top][1]:.3f})"


def best_models(eval_root: Path, tasks: list[str], metric: str = BEST_BY, models_root: Path | None = None,
                train: dict | None = None) -> dict[str, dict]:
    """Per task, its champion: the converged trained model with the highest mean ``metric`` over the
    test corruptions, among those that failed on none of them (below the degraded input's
    :data:`~medrestore.evaluation.metrics.BEST_BY`: :mod:`medrestore.evaluation.gates`). ``models_root`` holds the
    curves,
    ``train`` the params that say which models start from which (:func:`task_convergence`). A task
    with no such model is left out: it gets no champion (:func:`champion_lines` says why)."""
    best: dict[str, dict] = {}
    for task in tasks:
        summary = read_json(Path(eval_root) / task / "summary.json")
        conv = task_convergence(models_root, task, train) if models_root is not None else {}
        failed = set().union(*(failed_in_summary(summary, v) for v in summary.get("variants", [])))
        scores = {}
        for m, variants in summary["methods"].items():
            vals = [v[metric]["mean"] for v in variants.values() if v.get("kind") == "model" and metric in v]
            if vals and (m not in conv or conv[m]["converged"]) and m not in failed:
                scores[m] = float(np.mean(vals))
        if scores:
            top = max(sorted(scores), key=scores.get)
            best[task] = {"model": top, "metric": f"mean {metric} over test corruptions", "value": scores[top]}
    return best


def champion_lines(tasks: list[str], best: dict[str, dict]) -> list[str]:
    """Per task, its champion (:func:`best_models`) or why it has none."""
    return [f"{t}: {best[t]['model']}" if t in best else f"{t}: no champion: {NO_CHAMPION}" for t in tasks]
