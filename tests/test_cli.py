import json

import pytest

from medrestore.cli import main
from medrestore.core.io import read_image, write_png_atomic
from medrestore.degradations import corrupt
from medrestore.models import build_model, save_model


def test_models_json_lists_every_model_with_parameter_count(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["irunet"]["parameters"] == 123379
    assert rows["dncnn"]["task"] == "denoise" and rows["nlmeans"]["kind"] == "baseline"


def test_every_command_and_option_has_help_and_the_top_level_help_lists_every_command():
    import argparse

    from medrestore.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) >= {"models", "metrics", "restore", "lineage", "verify", "check-params", "sweep"}
    missing = []
    for name, command in sub.choices.items():
        assert f"medrestore {name} " in parser.description or f"medrestore {name}\n" in parser.description, (
            f"{name} not in the top-level help"
        )
        assert (
            any(name == c.dest for c in sub._choices_actions)
            and next(c for c in sub._choices_actions if c.dest == name).help
        )
        for action in command._actions:
            if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"options without help: {missing}"
    top = parser.format_help()
    assert "medrestore sweep" in top and "COMMAND --help" in top


def test_models_reads_the_catalog_without_importing_torch(tmp_path):
    """`medrestore models` lists the registry from medrestore/models_catalog.json: current (the md5 of
    the models' source matches, the rows are the registry's), read without torch, and ignored for the
    registry itself once the models' source changes."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from medrestore.core import catalog

    saved = json.loads(catalog.CATALOG.read_text())
    assert saved["models_md5"] == catalog.source_md5(), "stale catalog. Fix: python -m medrestore.core.catalog --write"
    registry = catalog.from_registry()
    assert saved["rows"] == registry
    src = str(Path(catalog.__file__).resolve().parents[2])
    code = ("import sys, json; from medrestore.cli import main; main(['models', '--json']); assert not [m for m in "
            "sys.modules if m.split('.')[0] in ('torch', 'numpy') or m.startswith('medrestore.models')], "
            "sorted(sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == [{k: r[k] for k in ("name", "kind", "task", "parameters",
                                                          "paper")} for r in registry]
    # the fast path reads the file: a catalog that matches the source is believed ...
    fake = tmp_path / "catalog.json"
    fake.write_text(json.dumps({"models_md5": catalog.source_md5(), "rows": [{"name": "x"}]}))
    assert catalog.rows(fake) == [{"name": "x"}]
    # ... and one written for other source is not: a changed model is counted from the registry
    models = shutil.copytree(catalog.MODELS_DIR, tmp_path / "models", ignore=shutil.ignore_patterns("__pycache__"))
    (models / "dncnn.py").write_text((models / "dncnn.py").read_text() + "\n# changed\n")
    assert catalog.rows(fake, models_dir=models) == registry


def test_metrics_command_prints_every_metric(tmp_path, chase_dir, assets_dir, capsys):
    clean = read_image(chase_dir / "Image_03R.jpg")[300:556, 300:556]
    noisy, _ = corrupt(clean, {"kind": "gaussian", "sigma": 25}, [1])
    write_png_atomic(tmp_path / "clean.png", clean)
    write_png_atomic(tmp_path / "noisy.png", noisy)
    assert main(["metrics", str(tmp_path / "noisy.png"), str(tmp_path / "clean.png"), "--assets", str(assets_dir),
                 "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert {"psnr", "psnr_y", "psnr_green", "psnr_fov", "ssim", "ssim_rgb", "niqe", "brisque", "entropy"} <= set(scores)
    assert 19 < scores["psnr"] < 23


def test_restore_writes_outputs_and_reports_bad_files_without_stopping(tmp_path, chase_dir, capsys):
    save_model(build_model("redae").eval(), tmp_path / "model", name="redae", kwargs={})
    write_png_atomic(tmp_path / "in" / "eye.png", read_image(chase_dir / "Image_04L.jpg")[:200, :300])
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    code = main(["restore", "--model", str(tmp_path / "model"), str(tmp_path / "in" / "broken.png"),
                 str(tmp_path / "in" / "eye.png"), "--out", str(tmp_path / "out"), "--tile", "128"])
    assert code == 1
    assert "broken.png" in capsys.readouterr().err
    out = read_image(tmp_path / "out" / "eye.png")
    assert out.shape == (200, 300, 3)


def test_unknown_model_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["restore", "--model", str(tmp_path), str(tmp_path / "x.png"), "--out", str(tmp_path / "o")]) == 2
    assert "model.json" in capsys.readouterr().err


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
