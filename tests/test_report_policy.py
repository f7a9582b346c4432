"""The report's policy (medrestore.report.policy) on convergence: a model that did not converge is
marked in its rows and is never called best (tables, best-method choices, the registry's pick)."""

import json

import pytest

from medrestore.core.io import write_json_atomic
from medrestore.report.policy import (
    banner,
    best_by,
    best_models,
    best_on_vessels,
    label,
    task_convergence,
)
from medrestore.report.tables import headline_numbers, task_table


def _stats(kind: str, psnr: float, kept: float = 0.0, invented: float = 0.5) -> dict:
    def m(v):
        return {"mean": v, "ci95": [v - 0.1, v + 0.1]}

    return {"kind": kind, "n": 4, "psnr": m(psnr), "psnr_fov": m(psnr + 0.5),
            "manual_thin_recall_above_chance": m(kept), "manual_invented_rate": m(invented)}


def _every(step: int, values: list[float]) -> list[tuple[int, float]]:
    """A validation curve as the engine writes it: one point every ``step`` steps (at least 8 to be judged)."""
    return [(step * (i + 1), v) for i, v in enumerate(values)]


@pytest.fixture
def task(tmp_path):
    """A task with a converged and a still-climbing model (curves as the engine writes them)."""
    models = tmp_path / "models" / "denoise-g25"
    curves = {"irunet": _every(125, [30.0, 31.0, 32.0, 32.3, 32.5, 32.6, 32.65, 32.7]),
              "dncnn": _every(125, [22.0, 23.0, 24.0, 24.5, 25.0, 26.0, 27.5, 29.0])}
    for name, pts in curves.items():
        (models / name).mkdir(parents=True)
        rows = ["step,train_loss,lr,val_loss,val_psnr"] + [f"{s},0.01,0.001,0.01,{p}" for s, p in pts]
        (models / name / "curve.csv").write_text("\n".join(rows) + "\n")
        write_json_atomic(models / name / "metrics.json", {"steps": 1000, "best_val_psnr": max(p for _, p in pts)})
    summary = {"variants": ["s25"], "methods": {
        "degraded": {"s25": _stats("input", 21.0, 0.5, 0.76)},
        "nlmeans": {"s25": _stats("baseline", 30.5, 0.0, 0.14)},
        "irunet": {"s25": _stats("model", 32.0, 0.15, 0.30)},
        "dncnn": {"s25": _stats("model", 33.0, 0.40, 0.20)},
    }}
    (tmp_path / "eval" / "denoise-g25").mkdir(parents=True)
    (tmp_path / "eval" / "denoise-g25" / "summary.json").write_text(json.dumps(summary))
    return tmp_path, summary


def test_convergence_is_read_from_each_models_curve(task):
    root, _ = task
    conv = task_convergence(root / "models", "denoise-g25")
    assert conv["irunet"]["converged"] and not conv["dncnn"]["converged"]
    assert conv["dncnn"]["last_quarter_gain_db"] == pytest.approx(3.0)


def test_unconverged_rows_are_marked_and_never_bold(task):
    root, summary = task
    conv = task_convergence(root / "models", "denoise-g25")
    header, rows = task_table(summary, "s25", conv)
    by_name = {r[0]: r for r in rows}
    assert "dncnn (not converged)" in by_name and "irunet" in by_name and "dncnn" not in by_name
    psnr = header.index("psnr")
    assert by_name["irunet"][psnr].startswith("**")  # dncnn has the higher PSNR but did not converge
    assert not by_name["dncnn (not converged)"][psnr].startswith("**")
    assert label("nlmeans", conv) == "nlmeans"


def test_best_choices_skip_unconverged_models(task):
    root, summary = task
    conv = task_convergence(root / "models", "denoise-g25")
    best = best_models(root / "eval", ["denoise-g25"], models_root=root / "models")["denoise-g25"]
    assert best["model"] == "irunet" and best["metric"] == "mean psnr_fov over test corruptions"
    # the best method of a test corruption is judged on the same metric (psnr_fov), as the evaluation's best baseline
    assert best_by(summary, "s25", conv) == "irunet (32.50 dB)" and best_by(summary, "s25", {}) == "dncnn (33.50 dB)"
    # on vessels: dncnn keeps more but did not converge; irunet keeps some and invents 0.30 <= 0.76 / 2
    assert best_on_vessels(summary, "s25", conv).startswith("irunet")
    assert best_on_vessels(summary, "s25", {}).startswith("dncnn")
    # not surely above chance
    summary["methods"]["irunet"]["s25"]["manual_thin_recall_above_chance"]["ci95"] = [-0.01, 0.2]
    assert best_on_vessels(summary, "s25", conv) is None


def test_headline_numbers_and_banner(task):
    root, summary = task
    conv = task_convergence(root / "models", "denoise-g25")
    nums = headline_numbers(summary["methods"]["dncnn"]["s25"], conv["dncnn"])
    assert (
        nums["converged"] is False
        and nums["thin_kept"] == 0.40
        and nums["invented"] == 0.20
        and nums["psnr_fov"] == 33.5
    )
    assert "converged" not in headline_numbers(summary["methods"]["nlmeans"]["s25"], None)
    params = {"train": {"profile": "quick"}}
    assert banner(params, {"denoise-g25": conv}).startswith("**Quick tour")
    params["train"]["profile"] = "standard"
    assert "1 of 2 trained models did not converge (denoise-g25/dncnn)" in banner(params, {"denoise-g25": conv})
    assert banner(params, {"denoise-g25": {"irunet": conv["irunet"]}}) is None


def _curve(folder, pts, steps):
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["step,train_loss,lr,val_loss,val_psnr"] + [f"{s},0.01,0.001,0.01,{p}" for s, p in pts]
    (folder / "curve.csv").write_text("\n".join(rows) + "\n")
    write_json_atomic(folder / "metrics.json", {"steps": steps, "best_val_psnr": max(p for _, p in pts)})


def test_a_falling_curve_and_an_unconverged_start_are_not_convergence(tmp_path):
    models = tmp_path / "models"
    # still rising
    _curve(models / "denoise-blind" / "dncnn-blind", _every(125, [22.0, 23.0, 24.0, 24.5, 25.0, 26.0, 27.5, 29.0]),
           1000)
    # flat, from the blind model
    _curve(models / "denoise-g25" / "dncnn", _every(25, [25.0, 25.05, 25.1, 25.1, 25.1, 25.1, 25.11, 25.12]), 200)
    _curve(models / "denoise-g25" / "irunet", _every(125, [30.0, 31.0, 32.0, 33.0, 33.05, 33.1, 33.1, 33.1]), 1000)
    # chained onto dncnn
    _curve(models / "denoise-g25" / "dncnn-srgan", _every(15, [33.0, 33.05, 33.1, 33.1, 33.1, 33.1, 33.1, 33.1]), 120)
    # best first, then falling
    _curve(models / "enhance" / "cyclegan", _every(10, [15.0, 14.8, 14.6, 14.4, 14.2, 14.0, 13.5, 13.0]), 80)
    train = {"finetune": {"g25-dncnn": {"task": "denoise-g25", "model": "dncnn", "init": "denoise-blind/dncnn-blind"}},
             "chains": {"c": {"task": "denoise-g25", "model": "srgan", "method": "dncnn-srgan", "first": "dncnn"}}}
    conv = task_convergence(models, "denoise-g25", train)
    assert conv["irunet"]["converged"]
    assert conv["dncnn"]["run_converged"] and not conv["dncnn"]["converged"]
    assert conv["dncnn"]["why"] == "starts from denoise-blind/dncnn-blind, which did not converge"
    assert not conv["dncnn-srgan"]["converged"] and "denoise-g25/dncnn" in conv["dncnn-srgan"]["why"]
    assert task_convergence(models, "denoise-g25")["dncnn"]["converged"]  # without params: its own curve only
    # a fine-tuning that climbed far from its start and then flattened is judged by its own run
    _curve(models / "denoise-g25" / "dncnn", _every(500, [27.2, 29.5, 31.8, 33.0, 34.0, 34.42, 34.5, 34.56]), 4000)
    moved = task_convergence(models, "denoise-g25", train)["dncnn"]
    assert moved["converged"] and "why" not in moved
    assert (
        moved["note"]
        == "starts from denoise-blind/dncnn-blind, which did not converge; its own run gained 7.4 dB over its first "
        "validation, then flattened"
    )
    # a chain on an unconverged first model never is, however far it climbed: its data are that model's outputs
    # rising
    _curve(models / "denoise-g25" / "redae", _every(125, [22.0, 23.5, 25.0, 26.0, 27.0, 28.0, 29.5, 31.0]), 1000)
    _curve(models / "denoise-g25" / "redae-srgan", _every(15, [20.0, 30.0, 33.0, 33.1, 33.1, 33.1, 33.1, 33.1]), 120)
    chain = {"chains": {"c2": {"task": "denoise-g25", "model": "srgan", "method": "redae-srgan", "first": "redae"}}}
    climbed = task_convergence(models, "denoise-g25", chain)["redae-srgan"]
    assert climbed["run_converged"] and not climbed["converged"] and "denoise-g25/redae" in climbed["why"]
    cyc = task_convergence(models, "enhance", train)["cyclegan"]
    # a falling curve: the run's own rule says so (training.convergence), and the report keeps it
    assert (
        not cyc["run_converged"]
        and not cyc["converged"]
        and cyc["why"] == "validation PSNR ended 2.00 dB below its best"
    )


# The sanity gate (medrestore.evaluation.gates): a trained model below its degraded input failed there. The
# evaluation is built from real CHASE_DB1 photographs, degraded, "restored" by a red checkerboard
# (cyclegan-fc) and scored with the project's own metrics (tests/gates_data.py).


@pytest.fixture
def broken(tmp_path, chase_dir):
    from gates_data import write_workspace

    table, summary = write_workspace(tmp_path, chase_dir)
    return tmp_path, table, summary


def test_a_checkerboard_below_its_input_is_failed_in_the_summary_and_the_table(broken):
    from gates_data import BROKEN, VARIANT
    from medrestore.evaluation.gates import failed_in_summary, failed_in_table

    _, table, summary = broken
    scores = {m: v[VARIANT]["psnr_fov"]["mean"] for m, v in summary["methods"].items()}
    assert scores[BROKEN] < scores["degraded"] < scores["cyclegan"]  # the checkerboard is far below its input
    assert failed_in_summary(summary, VARIANT) == failed_in_table(table, VARIANT) == {BROKEN}


def test_the_failed_rule_is_a_strict_comparison_with_the_input():
    from medrestore.evaluation.gates import failed_models

    assert failed_models({"a": 14.9, "b": 15.0, "c": 15.1}, 15.0) == {"a"}  # equal to the input is no failure
    assert failed_models({"a": 1.0}, None) == set()  # no input row: nothing to judge against
    assert failed_models({"a": float("nan")}, 15.0) == set()


def test_a_failed_model_is_never_best_and_its_rows_say_so(broken):
    from gates_data import BROKEN, VARIANT

    root, _, summary = broken
    conv = task_convergence(root / "models", "enhance")
    assert conv[BROKEN]["converged"] and conv["cyclegan"]["converged"]  # only the gate stops it
    assert best_by(summary, VARIANT, conv).startswith("cyclegan (")
    summary_best_only_broken = {"variants": [VARIANT],
                                "methods": {m: v for m, v in summary["methods"].items() if m in ("degraded", BROKEN)}}
    assert best_by(summary_best_only_broken, VARIANT, conv) is None
    header, rows = task_table(summary, VARIANT, conv)
    by_name = {r[0]: r for r in rows}
    shown = f"{BROKEN} (failed: below its input)"
    assert shown in by_name and BROKEN not in by_name
    assert not any(cell.startswith("**") for cell in by_name[shown][2:])  # never bold, not even on its own columns
    assert label(BROKEN, {BROKEN: {"converged": False}},
                 {BROKEN}) == f"{BROKEN} (not converged; failed: below its input)"


def test_a_task_whose_converged_models_all_fail_gets_no_champion(tmp_path, chase_dir):
    from gates_data import BROKEN, write_workspace
    from medrestore.report.policy import champion_lines

    write_workspace(tmp_path, chase_dir, "enhance")
    write_workspace(tmp_path, chase_dir, "enhance-x", all_broken=True)  # cyclegan outputs the inverted image
    best = best_models(tmp_path / "eval", ["enhance", "enhance-x"], models_root=tmp_path / "models")
    assert best["enhance"]["model"] == "cyclegan" and BROKEN not in [b["model"] for b in best.values()]
    assert "enhance-x" not in best
    assert champion_lines(["enhance", "enhance-x"], best) == [
        "enhance: cyclegan", "enhance-x: no champion: no converged model beats the degraded input"]


def test_the_crops_and_error_figures_title_a_failed_model_so(broken, monkeypatch):
    import medrestore.report.figures as figures
    from gates_data import BROKEN

    root, _, summary = broken
    titles = []
    monkeypatch.setattr(figures, "_fig_png", lambda fig: titles.extend(ax.get_title() for ax in fig.axes) or b"")
    conv = task_convergence(root / "models", "enhance")
    figures.crops_figure("enhance", root / "eval" / "enhance", root / "patches", summary, window=48, converged=conv)
    figures.error_maps_figure("enhance", root / "eval" / "enhance", root / "patches", summary, window=48,
                              converged=conv)
    assert any(t.startswith(f"{BROKEN}\n(failed: below its input)\n") for t in titles[:8])  # name, mark, PSNR
    assert any(t.startswith(f"{BROKEN} (failed: below its input), R") for t in titles)
    assert any(t.startswith("cyclegan\n") and "dB" in t for t in titles) and not any(
        t.startswith("cyclegan (") for t in titles
    )


def test_a_baseline_below_its_input_is_never_best(chase_dir):
    """The red checkerboard of tests/gates_data.py offered as a classical baseline: below its input on
    real CHASE_DB1 images, so it is marked and never best, whatever its kind."""
    from gates_data import BROKEN, VARIANT, evaluation
    from medrestore.evaluation.scoring import summarise
    from medrestore.report.policy import best_by
    from medrestore.report.tables import task_table

    table, _ = evaluation(chase_dir)
    table = table.copy()
    table.loc[table["method"] == BROKEN, ["method", "kind"]] = ["checker", "baseline"]
    summary = {"task": "enhance", "variants": [VARIANT], "methods": summarise(table, 0)}
    assert not best_by(summary, VARIANT, {}).startswith("checker")
    header, rows = task_table(summary, VARIANT, {})
    row = next(r for r in rows if r[0].startswith("checker"))
    assert row[0] == "checker (failed: below its input)" and not any(c.startswith("**") for c in row[2:])
    only = table[table["method"].isin(["degraded", "checker"])]
    alone = {"task": "enhance", "variants": [VARIANT], "methods": summarise(only, 0)}
    assert best_by(alone, VARIANT, {}) is None
