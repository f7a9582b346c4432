"""Where a number or a model file came from: DVC stage, data and code hashes, params, git commit,
MLflow run.

The chain is read from three places, none of which the pipeline writes run ids into:

- ``dvc.lock``: the stage whose output holds the file, the md5 of every dependency (data, code)
  and the params it ran with;
- git: the commit that recorded that ``dvc.lock`` entry (``git log -S<md5> -- dvc.lock``), and
  whether the file on disk still matches it;
- MLflow: the finished run of that stage whose tags name the file's md5 (the stages tag
  their runs ``out_md5:<path>`` through :func:`tag_outputs`), else the newest finished run of the stage
  (labelled as such).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from medrestore.core.io import InputError
from medrestore.evaluation.metrics import headline, headline_key, headline_scores
from medrestore.tracking.dvclock import find_stage, read_lock
from medrestore.tracking.runs import EXPERIMENT, file_md5, tracking_uri


def git_recording_commit(root: Path, md5: str) -> dict | None:
    """The newest commit whose change to ``dvc.lock`` added ``md5``."""
    try:
        out = subprocess.run(
            ["git", "log", "-n1", "--format=%H%x00%cI%x00%s", f"-S{md5}", "--", "dvc.lock"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    if not out:
        return None
    sha, date, subject = out.split("\x00", 2)
    return {"commit": sha, "date": date, "subject": subject}


def mlflow_run(stage: str, rel: str, md5: str | None, uri: str | None = None) -> dict | None:
    """The MLflow run that produced the output, or None when the store has no such run."""
    try:
        import mlflow
        from mlflow import MlflowClient

        from medrestore.tracking.runs import configure_http

        configure_http()  # a tracking server that is down: seconds, not minutes
        client = MlflowClient(tracking_uri=uri or tracking_uri())
        exp = client.get_experiment_by_name(EXPERIMENT)
        if exp is None:
            return None
        runs = client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.dvc_stage = '{stage}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=200,
        )
    except Exception as exc:  # noqa: BLE001  an unreachable store must not hide the rest of the chain
        return {"error": f"{type(exc).__name__}: {exc}"}
    del mlflow
    if md5:
        for r in runs:
            if r.data.tags.get(f"out_md5:{rel}") == md5:
                return _run_record(r, "output md5 tag")
    if runs:
        return _run_record(runs[0], "newest finished run of the stage (no run carries this output's md5)")
    return None


def _run_record(run, how: str) -> dict:
    return {
        "run_id": run.info.run_id,
        "matched_by": how,
        "git_commit": run.data.tags.get("git_commit"),
        "git_dirty": run.data.tags.get("git_dirty"),
        "dvc_exp_name": run.data.tags.get("dvc_exp_name") or None,
    }


def cache_dir(root: Path) -> Path:
    """The DVC cache of the workspace: ``cache.dir`` of ``.dvc/config`` (or ``config.local``), else ``.dvc/cache``."""
    import configparser

    for name in ("config.local", "config"):
        cfg = configparser.ConfigParser()
        if cfg.read(root / ".dvc" / name) and cfg.has_option("cache", "dir"):
            d = Path(cfg.get("cache", "dir"))
            return d if d.is_absolute() else (root / ".dvc" / d).resolve()
    return root / ".dvc" / "cache"


def dir_manifest(root: Path, dir_md5: str) -> dict[str, str] | None:
    """relpath -> md5 of every file of a DVC directory output (its ``.dir`` entry in the cache, DVC 3
    layout ``files/md5/ab/cdef....dir``); None when the cache does not hold it."""
    if not dir_md5.endswith(".dir"):
        return None
    base = cache_dir(root)
    for cand in (base / "files" / "md5" / dir_md5[:2] / dir_md5[2:], base / dir_md5[:2] / dir_md5[2:]):
        if cand.is_file():
            return {e["relpath"]: e["md5"] for e in json.loads(cand.read_text())}
    return None


def lineage(path: str | Path, root: Path | None = None, uri: str | None = None) -> dict[str, Any]:
    """The full chain for one file inside the repository (a model, a metrics file, a report)."""
    from medrestore.core.io import workspace_root

    root = Path(root or workspace_root()).resolve()
    path = Path(path)
    full = (path if path.is_absolute() else Path.cwd() / path).resolve()
    if not full.exists():
        raise InputError(f"{path}: no such file. Fix: give a file written by the pipeline, e.g. "
                         "artifacts/models/<task>/<model>/model.safetensors.")
    try:
        rel = full.relative_to(root).as_posix()
    except ValueError:
        raise InputError(f"{path}: not inside the repository {root}. Fix: run from the repository or give a path "
                         "inside it.") from None
    lock = read_lock(root / "dvc.lock", required=True)
    found = find_stage(lock, rel)
    if found is None:
        raise InputError(f"{rel}: no stage of dvc.lock outputs it. Fix: give a pipeline output (see `dvc stage list`).")
    stage, entry, out = found
    md5 = file_md5(full) if full.is_file() else None
    locked_md5, lock_note = (out.get("md5"), None) if out["path"] == rel else (None, None)
    if locked_md5 is None and md5 is not None:  # a file inside a directory output: its md5 in the .dir manifest
        manifest = dir_manifest(root, out.get("md5") or "")
        inner = rel[len(out["path"].rstrip("/")) + 1:]
        if manifest is None:
            lock_note = (
                f"the DVC cache holds no manifest of {out['path']} ({out.get('md5')}): run `dvc pull` or `dvc status`"
            )
        elif inner not in manifest:
            locked_md5, lock_note = "", f"{inner} is not a file of {out['path']} as dvc.lock recorded it"
        else:
            locked_md5 = manifest[inner]
    params = {}
    for section in (entry.get("params") or {}).values():
        params.update(section)
    record: dict[str, Any] = {
        "file": rel,
        "md5": md5,
        "stage": stage,
        "stage_output": out["path"],
        "stage_output_md5": out.get("md5"),
        "matches_lock": None if locked_md5 is None else md5 == locked_md5,
        "lock_md5": locked_md5 or None,
        "lock_note": lock_note,
        "command": entry.get("cmd"),
        "deps": [{"path": d["path"], "md5": d.get("md5")} for d in entry.get("deps", [])],
        "params": params,
        "git": git_recording_commit(root, out.get("md5", "")) if out.get("md5") else None,
        "mlflow": mlflow_run(stage, out["path"], out.get("md5"), uri),
    }
    return record


def format_lineage(rec: dict[str, Any]) -> str:
    lines = [f"file        {rec['file']}", f"md5         {rec['md5'] or '(directory)'}"]
    if rec["matches_lock"] is False:
        lines.append(f"WARNING     the file differs from what dvc.lock recorded (md5 {rec.get('lock_md5') or 'none'}): "
                     "it was changed after the stage ran (run `dvc status`; `dvc checkout` restores it).")
    if rec.get("lock_note"):
        lines.append(f"NOTE        {rec['lock_note']}")
    lines += [f"stage       {rec['stage']}  ({rec['command']})",
              f"output      {rec['stage_output']}  md5 {rec['stage_output_md5']}"]
    lines.append("inputs")
    lines += [f"  {d['md5'] or '-':<40} {d['path']}" for d in rec["deps"]]
    lines.append("params")
    lines += [f"  {k} = {json.dumps(v)}" for k, v in rec["params"].items()]
    g = rec["git"]
    lines.append(
        f"git         {g['commit']}  {g['date']}  {g['subject']}"
        if g
        else "git         (this dvc.lock entry is not committed yet)"
    )
    m = rec["mlflow"]
    if m is None:
        lines.append("mlflow      (no finished run of this stage in the tracking store)")
    elif "error" in m:
        lines.append(f"mlflow      (tracking store unreachable: {m['error']})")
    else:
        lines.append(f"mlflow      run {m['run_id']} (matched by {m['matched_by']}; code {m['git_commit']}, "
                     f"dirty={m['git_dirty']})")
    return "\n".join(lines)


def scores_description(task: str, model: str, summary: dict) -> str:
    """A registered version's description: the model and its mean test scores, one line per test corruption."""
    scores = headline_scores(summary, model)
    lines = [(f"{task}/{model}: mean scores over the test images (artifacts/eval/{task}/summary.json; the same numbers "
              "are the version's tags and its training run's metrics test_<corruption>_<metric>).")]
    for variant in sorted(summary["methods"].get(model, {})):
        parts = [
            f"{name} {scores[headline_key(variant, name)]:.4g}"
            for name in headline()
            if headline_key(variant, name) in scores
        ]
        lines.append(f"- {variant}: " + ", ".join(parts))
    return "\n".join(lines)


def register_best_models(best: dict[str, dict], models_root: Path, root: Path | None = None, tracker=None,
                         tasks: list[str] = (), eval_root: Path | None = None) -> dict[str, str]:
    """Point the ``champion`` alias of ``medrestore-<task>`` at each task's best model (inside a DVC
    experiment its own alias ``exp-<name>``: an experiment never replaces the published champion).
    A task of ``tasks`` absent from ``best`` has no converged model that beats its degraded input: it
    gets no champion, a stale alias is removed and the registered model's tag says why
    (:func:`medrestore.serving.mlflow_model.withdraw_champion`).

    ``best`` maps task -> {"model": name, "metric": name, "value": float}. The registered source is
    the MLflow pyfunc its training run logged (tag ``model_uri``; :mod:`medrestore.serving.mlflow_model`), so
    the version hangs off the training run; a new version is made only when no version holds
    weights of the same md5 (:func:`medrestore.serving.mlflow_model.register_champion`), with the lineage as
    tags: DVC stage, the md5 of every input, a digest of the params, the commit that recorded them
    and the training run's id. With ``eval_root`` (the evaluate stage's folders), the model's test scores
    in ``<eval_root>/<task>/summary.json`` become tags of the version under the training run's metric
    names (``test_s25_psnr_fov``: :func:`medrestore.metrics.headline_scores`) and its description, a
    reused version included. Returns task -> "name/version"; failures are counted by ``tracker``
    and never stop the report.
    """
    import mlflow
    from mlflow import MlflowClient

    root = Path(root or Path.cwd())
    done: dict[str, str] = {}
    if mlflow.active_run() is None:
        return done
    client = MlflowClient()
    _withdraw_champions(sorted(set(tasks) - set(best)), tracker)
    for task, pick in sorted(best.items()):
        folder = Path(models_root) / task / pick["model"]
        try:
            done[task] = _register_best(client, task, pick, folder, root)
            summary = Path(eval_root or "") / task / "summary.json"
            if eval_root is not None and summary.is_file():
                _describe_version(client, done[task], task, pick["model"], summary)
        except Exception as exc:
            if tracker is not None:
                tracker.failures.append(f"register {task}: {type(exc).__name__}: {str(exc)[:300]}")
            else:
                raise
    return done


def _withdraw_champions(tasks: list[str], tracker=None) -> None:
    """Remove the alias of each of ``tasks`` (tasks without a champion); failures counted by ``tracker``
    (raised without one)."""
    from medrestore.evaluation.gates import NO_CHAMPION
    from medrestore.serving.mlflow_model import alias_for_run, withdraw_champion
    from medrestore.tracking.runs import repo_lock

    for task in tasks:
        try:
            with repo_lock("register"):
                withdraw_champion(task, NO_CHAMPION, alias=alias_for_run())
        except Exception as exc:
            if tracker is not None:
                tracker.failures.append(f"withdraw {task}: {type(exc).__name__}: {str(exc)[:300]}")
            else:
                raise


def _register_best(client, task: str, pick: dict, folder: Path, root: Path) -> str:
    """Point the alias at the pyfunc that the training run of ``folder``'s model (``pick``: the chosen
    model and its score) logged, a new version only for new weights, with the lineage as tags;
    returns "name/version"."""
    from medrestore.serving.mlflow_model import alias_for_run, register_champion
    from medrestore.tracking.runs import repo_lock

    rec = lineage(folder / "model.safetensors", root=root)
    run_id = (rec["mlflow"] or {}).get("run_id")
    uri = client.get_run(run_id).data.tags.get("model_uri") if run_id else None
    if not uri:
        raise RuntimeError(f"the training run of {task}/{pick['model']} ({run_id or 'not found'}) logged no "
                           f"MLflow model. Fix: retrain it (dvc repro --force the stage {rec['stage']}).")
    tags = {
        "task": task,
        "model": pick["model"],
        "selected_by": f"{pick['metric']} = {pick['value']:.4f}",
        "dvc_stage": rec["stage"],
        "git_commit": (rec["git"] or {}).get("commit", "uncommitted"),
        "train_run_id": run_id,
        **{f"dep:{d['path']}": d["md5"] or "" for d in rec["deps"]},
        "params": json.dumps(rec["params"], sort_keys=True, default=str)[:4000],
    }
    colour = (
        json.loads((folder / "model.json").read_text()).get("colour")
        if (folder / "model.json").is_file()
        else None
    )
    if colour:  # the training targets' channel means (medrestore restore's colour-range check)
        tags["train_colour"] = json.dumps(colour, sort_keys=True)[:4000]
    with repo_lock("register"):  # two queued experiments' report stages: one registration at a time
        return register_champion(task, uri, rec["md5"], tags, alias=alias_for_run())


def _describe_version(client, registered: str, task: str, model: str, summary: Path) -> None:
    """The model's test scores in ``summary`` (the evaluate stage's summary.json) as tags and
    description of the version ``registered`` ("name/version")."""
    name, version = registered.rsplit("/", 1)
    scored = json.loads(summary.read_text())
    for key, value in sorted(headline_scores(scored, model).items()):
        client.set_model_version_tag(name, version, key, f"{value:.6g}")
    client.update_model_version(name, version, description=scores_description(task, model, scored))
