import json

import pytest

from medrestore.cli import main
from medrestore.degradations import corrupt
from medrestore.core.io import read_image, write_png_atomic
from medrestore.models import build_model, save_model


def test_models_json_lists_every_model_with_parameter_count(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["irunet"]["parameters"] == 123379
    assert rows["dncnn"]["task"] == "denoise" and rows["nlmeans"]["kind"] == "baseline"


def test_metrics_command_prints_every_metric(tmp_path, chase_dir, assets_dir, capsys):
    clean = read_image(chase_dir / "Image_03R.jpg")[300:556, 300:556]
    noisy, _ = corrupt(clean, {"kind": "gaussian", "sigma": 25}, [1])
    write_png_atomic(tmp_path / "clean.png", clean)
    write_png_atomic(tmp_path / "noisy.png", noisy)
    assert main(["metrics", str(tmp_path / "noisy.png"), str(tmp_path / "clean.png"), "--assets", str(assets_dir), "--json"]) == 0
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
