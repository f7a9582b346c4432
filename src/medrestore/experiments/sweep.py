"""The vessel-term weight sweep: DVC experiments that vary ``train.vessel.KEY.overrides.perceptual.weight``,
collected into ``reports/vessel_sweep.json`` (git-tracked, read by the report's sweep figure).

Run (README, "Vessel-aware training")::

    for w in 0.0003 0.001 0.003; do
      dvc exp run --queue -S "train.vessel.denoise-g25-cdae-vfeat.overrides.perceptual.weight=$w"
      dvc exp run --queue -S "train.vessel.denoise-g25-cdae-vprob.overrides.perceptual.weight=$w"
    done
    dvc queue start -j 1 && dvc queue status        # wait until every experiment is Success
    medrestore sweep                                 # writes reports/vessel_sweep.json
    dvc repro report                                 # draws the figure

:func:`collect` reads the rows of ``dvc.api.exp_show`` (one flat dict per experiment: params as
``train.vessel...weight``, metrics as ``task.method.variant.metric``, either possibly prefixed with the
file name and a colon). The per-method numbers are in ``reports/metrics.json``, a plain output (DVC's
declared metrics are the narrow ``reports/headline.json``): :func:`with_report_numbers` adds them to
each row from the row's own commit (the workspace's: the file). Each experiment gives one point per vessel-aware run
whose weight it changed
from the workspace's; the workspace (the standard run) gives one point per run at its own weight.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from medrestore.core.io import InputError, load_yaml, write_json_atomic

#: The headline metrics of reports/metrics.json each point keeps.
POINT_METRICS = ("psnr_fov", "thin_kept", "invented", "thin_kept_indep", "invented_indep")
#: Their names in the sweep figure (the evaluation's column names).
AS_COLUMNS = {"thin_kept_indep": "indep_thin_recall_above_chance", "invented_indep": "indep_invented_rate",
              "thin_kept": "manual_thin_recall_above_chance", "invented": "manual_invented_rate",
              "psnr_fov": "psnr_fov"}


def _plain(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row's keys without DVC's ``file:`` prefixes (``params.yaml:train.x`` -> ``train.x``)."""
    return {str(k).rsplit(":", 1)[-1]: v for k, v in row.items()}


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def with_report_numbers(rows: Iterable[Mapping[str, Any]], root: str | Path,
                        rel: str = "reports/metrics.json") -> list[dict[str, Any]]:
    """``rows`` (``dvc.api.exp_show``) with the numbers of ``rel`` at each row's revision (``rev``: a
    commit, or ``workspace`` for the file in ``root``) as ``task.method.variant.metric`` keys; a row's
    own keys win, a row without a readable ``rel`` is kept as it is."""
    import json
    import subprocess

    out = []
    for row in rows:
        rev, text = row.get("rev"), None
        if rev == "workspace":
            path = Path(root) / rel
            text = path.read_text() if path.is_file() else None
        elif rev:
            res = subprocess.run(["git", "show", f"{rev}:{rel}"], cwd=root, capture_output=True, text=True)
            text = res.stdout if res.returncode == 0 else None
        try:
            numbers = _flat(json.loads(text)) if text else {}
        except ValueError:
            numbers = {}
        out.append({**numbers, **row})
    return out


def collect(rows: Iterable[Mapping[str, Any]], vessel: Mapping[str, Mapping[str, Any]]) -> dict:
    """The sweep points of ``rows`` (``dvc.api.exp_show()``) for the runs of ``vessel`` (params.yaml's
    ``train.vessel``): form, weight, task, variant and the metrics of :data:`POINT_METRICS` as the
    evaluation's column names. Points of equal (run, weight, variant) are kept once; sorted."""
    points: dict[tuple, dict] = {}
    for raw in rows:
        row = _plain(raw)
        if row.get("State") not in (None, "Success", "") and row.get("Experiment") != "workspace":
            continue  # queued, running or failed: no results yet
        for key, entry in vessel.items():
            weight = row.get(f"train.vessel.{key}.overrides.perceptual.weight")
            if weight is None or weight == "-":
                continue
            form = entry["overrides"]["perceptual"]["backbone"]
            prefix = f"{entry['task']}.{entry['method']}."
            variants = sorted({k[len(prefix):].split(".", 1)[0] for k in row if k.startswith(prefix)})
            for variant in variants:
                values = {AS_COLUMNS[m]: row.get(f"{prefix}{variant}.{m}") for m in POINT_METRICS}
                values = {k: float(v) for k, v in values.items() if isinstance(v, (int, float))}
                if "psnr_fov" not in values:
                    continue
                points[(key, float(weight), variant)] = {"run": key, "method": entry["method"], "form": form,
                                                         "weight": float(weight),
                                                         "task": entry["task"], "variant": variant, **values}
    return {"note": "vessel-term weight sweep, collected by `medrestore sweep` from dvc exp show; metrics as in "
                    "reports/metrics.json",
            "points": [points[k] for k in sorted(points)]}


def merge_points(old: Iterable[Mapping[str, Any]], new: Iterable[Mapping[str, Any]]) -> list[dict]:
    """``new``'s points and those of ``old`` at a (run, weight, variant) that ``new`` lacks, sorted
    like :func:`collect`'s: a sweep whose experiments ran in several sessions or clones."""
    key = lambda p: (p["run"], float(p["weight"]), p["variant"])  # noqa: E731
    points = {key(p): dict(p) for p in old}
    points.update({key(p): dict(p) for p in new})
    return [points[k] for k in sorted(points)]


def write_sweep(out: str | Path = "reports/vessel_sweep.json", params_path: str | Path = "params.yaml",
                rows: Iterable[Mapping] | None = None,
                revs: list[str] | None = None, merge: bool = False, replace: bool = False,
                patches: str | Path | None = None) -> dict:
    """Collect the sweep from this repository's experiments (or ``rows``) and write ``out``.
    ``revs``: the baseline commits whose experiments count (default HEAD's, as ``dvc exp show``);
    ``merge``: keep the points already in ``out`` that this collection does not replace (experiments
    no longer in this repository: another clone's, or removed with ``dvc exp remove``); without it
    (and without ``replace``) an ``out`` holding points this collection lacks is refused, not shrunk.
    The file records the test images of ``patches`` (default: the workspace's
    ``artifacts/patches/patches.json`` beside ``params_path``) as ``test_images``: the report draws the
    points only on that split, and ``merge`` refuses points of another one."""
    import json

    if not Path(params_path).is_file():
        raise InputError(f"--params {params_path}: no such file. Fix: pass the repository's params.yaml (the default, "
                         "from its root).")
    try:
        params = load_yaml(Path(params_path).read_text())
    except Exception as exc:  # noqa: BLE001 - any YAML error, a duplicate key
        raise InputError(f"--params {params_path}: not valid YAML ({' '.join(str(exc).split())[:300]}). Fix: correct "
                         "it.") from exc
    if not isinstance(params, dict):
        raise InputError(f"--params {params_path}: not a params file (a mapping of sections). Fix: pass the "
                         "repository's params.yaml.")
    vessel = (params.get("train") or {}).get("vessel") or {}
    if not vessel:
        raise InputError(f"{params_path}: no train.vessel runs, so there is no sweep to collect. Fix: add them "
                         "(README, \"Vessel-aware training\").")
    if rows is None:
        import dvc.api

        try:
            rows = dvc.api.exp_show(revs=revs) if revs else dvc.api.exp_show()
        except Exception as exc:  # noqa: BLE001 - dvc's RevError, SCMError, NotDvcRepoError ...
            what = f"--rev {', '.join(revs)}" if revs else "HEAD"
            raise InputError(f"cannot list the DVC experiments of {what} ({type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:300]}). Fix: pass a commit of this repository (`git log "
                             "--oneline`), from inside the repository.") from None
    result = collect(with_report_numbers(rows, Path(params_path).parent), vessel)
    patches = Path(params_path).parent / "artifacts" / "patches" / "patches.json" if patches is None else Path(patches)
    if patches.is_file():
        result["test_images"] = json.loads(Path(patches).read_text())["splits"]["test"]
    if not merge and not replace and Path(out).is_file():
        try:
            before = json.loads(Path(out).read_text())["points"]
            key = lambda p: (p["run"], float(p["weight"]), p["variant"])  # noqa: E731
            lost = sorted({key(p) for p in before} - {key(p) for p in result["points"]})
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            lost = None
        if lost is None or lost:
            shown = (
                "it is not a sweep file"
                if lost is None
                else (
                    f"{len(lost)} of its {len(before)} points are not in this collection ("
                    + ", ".join(f"{r} weight {w:g} [{v}]" for r, w, v in lost[:4])
                    + (", ..." if len(lost) > 4 else "")
                    + ")"
                )
            )
            raise InputError(f"{out}: {shown}; writing {len(result['points'])} points would lose them. Fix: pass "
                             "--merge to keep them beside the new ones, or --replace to write only this collection.")
    if merge and Path(out).is_file():
        try:
            before = json.loads(Path(out).read_text())["points"]
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(
                f"{out}: not a sweep file ({exc}). Fix: collect without --merge to write it anew."
            ) from None
        earlier = json.loads(Path(out).read_text()).get("test_images")
        if before and earlier != result.get("test_images"):
            raise InputError(f"{out}: its {len(before)} points were scored on other test images than this workspace's "
                             f"({patches}): merged, they would compare different splits. Fix: pass --replace to write "
                             "only this collection.")
        result["points"] = merge_points(before, result["points"])
    write_json_atomic(Path(out), result)
    return result
