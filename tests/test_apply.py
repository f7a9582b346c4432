"""`medrestore restore`: model lookup, format and bit depth kept, FOV-aware, bad files reported."""

import numpy as np
import pytest
from PIL import Image

from medrestore.cli import main
from medrestore.core.io import InputError, read_image
from medrestore.data.fov import detect_fov
from medrestore.models import build_model, save_model
from medrestore.serving.restore import encode_native, read_native, resolve_model, restore_files


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    (root / "dvc.yaml").write_text("stages: {}\n")
    for task, name, kwargs in (("denoise-g25", "redae", {}), ("denoise-blind", "redae", {}),
                               ("denoise-g25", "cdae", {"channels": 1})):
        save_model(build_model(name, **kwargs).eval(), root / "artifacts" / "models" / task / name, name=name,
                   kwargs=kwargs)
    return root


def test_model_found_by_task_and_name_and_ambiguity_explained(models_root):
    assert resolve_model("denoise-g25/redae", models_root).name == "redae"
    assert resolve_model("cdae", models_root).parent.name == "denoise-g25"
    with pytest.raises(InputError, match="several tasks.*TASK/redae"):
        resolve_model("redae", models_root)
    with pytest.raises(InputError, match="denoise-g25/cdae"):
        resolve_model("nosuchmodel", models_root)


def test_sixteen_bit_grey_and_colour_round_trip_keep_depth(tmp_path, chase_image):
    grey16 = (chase_image[..., 1].astype(np.uint16) * 257)[:64, :80]
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    img = read_native(tmp_path / "g16.png")
    assert img.bits == 16 and img.grey and img.pixels.shape == (64, 80, 1)
    (tmp_path / "out.png").write_bytes(encode_native(img))
    back = np.asarray(Image.open(tmp_path / "out.png"))
    assert back.dtype == np.uint16 and np.array_equal(back, grey16)

    import cv2

    rgb16 = (chase_image[:64, :80].astype(np.uint16) * 257 + 3)
    cv2.imwrite(str(tmp_path / "c16.tif"), rgb16[..., ::-1])
    img = read_native(tmp_path / "c16.tif")
    assert img.bits == 16 and not img.grey and img.format == "TIFF"
    (tmp_path / "out.tif").write_bytes(encode_native(img))
    back = cv2.imread(str(tmp_path / "out.tif"), cv2.IMREAD_UNCHANGED)[..., ::-1]
    assert back.dtype == np.uint16 and np.array_equal(back, rgb16)


def test_restore_keeps_format_alpha_and_outside_fov(tmp_path, models_root, chase_image):
    eye = chase_image[::2, ::2]  # the whole fundus, FOV and black surround
    Image.fromarray(eye).save(tmp_path / "eye.jpg", quality=95)
    rgba = np.dstack([eye[:100, :120], np.full((100, 120), 200, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "eye_alpha.png")
    written, errors = restore_files(str(models_root / "artifacts/models/denoise-g25/redae"),
                                    [str(tmp_path / "eye.jpg"), str(tmp_path / "eye_alpha.png")], tmp_path / "out",
                                    tile=128, progress=False, log=lambda *_: None)
    assert errors == [] and [p.name for p in written] == ["eye.jpg", "eye_alpha.png"]
    with Image.open(tmp_path / "out" / "eye.jpg") as im:
        assert im.format == "JPEG" and im.size == (eye.shape[1], eye.shape[0])
    with Image.open(tmp_path / "out" / "eye_alpha.png") as im:
        assert im.mode == "RGBA" and np.all(np.asarray(im)[..., 3] == 200)

    # With fov="auto", outside the detected field of view the input is copied, inside the model changed it.
    Image.fromarray(eye).save(tmp_path / "eye.png")
    restore_files(str(models_root / "artifacts/models/denoise-g25/redae"), [str(tmp_path / "eye.png")], tmp_path / "o2",
                  tile=128, progress=False, log=lambda *_: None, fov="auto")
    out = read_image(tmp_path / "o2" / "eye.png")
    fov = detect_fov(eye)
    assert 0.3 < fov.mean() < 0.95
    assert np.array_equal(out[~fov], eye[~fov])
    assert np.abs(out[fov].astype(int) - eye[fov]).mean() > 0.5


def test_cli_reports_wrong_channels_and_broken_files_and_restores_the_rest(
    tmp_path, models_root, chase_image, capsys, monkeypatch
):
    monkeypatch.chdir(models_root)
    Image.fromarray(chase_image[:96, :96]).save(tmp_path / "colour.png")
    Image.fromarray(chase_image[:96, :96, 1]).save(tmp_path / "grey.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    code = main(["restore", "--model", "cdae", str(tmp_path / "colour.png"), str(tmp_path / "broken.png"),
                 str(tmp_path / "grey.png"), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "colour.png" in err and "greyscale" in err and "broken.png" in err
    assert "1 restored, 2 failed" in err
    assert read_image(tmp_path / "out" / "grey.png", "L").shape == (96, 96)
    assert not (tmp_path / "out" / "colour.png").exists()


def test_grey_image_through_a_colour_model_stays_grey(tmp_path, models_root, chase_image):
    Image.fromarray(chase_image[:80, :80, 1]).save(tmp_path / "g.png")
    restore_files(str(models_root / "artifacts/models/denoise-g25/redae"), [str(tmp_path / "g.png")], tmp_path / "o",
                  tile=64, progress=False, log=lambda *_: None)
    with Image.open(tmp_path / "o" / "g.png") as im:
        assert im.mode == "L" and im.size == (80, 80)


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_cli_restores_in_bf16_and_refuses_an_unknown_precision(tmp_path, models_root, chase_image, capsys, monkeypatch):
    monkeypatch.chdir(models_root)
    Image.fromarray(chase_image[200:328, 300:428]).save(tmp_path / "c.png")
    outs = {}
    for precision in ("float32", "bf16"):
        assert main(["restore", "--model", "denoise-g25/redae", str(tmp_path / "c.png"), "--out",
                     str(tmp_path / precision),
                     "--no-progress", "--precision", precision]) == 0
        outs[precision] = read_image(tmp_path / precision / "c.png").astype(int)
    diff = np.abs(outs["bf16"] - outs["float32"])
    assert diff.max() <= 3 and diff.mean() < 0.5  # 8-bit output: bf16 moves a few pixels by a level or two
    with pytest.raises(InputError, match="precision 'fp8'"):
        restore_files("denoise-g25/redae", [str(tmp_path / "c.png")], tmp_path / "x", precision="fp8")
    assert not (tmp_path / "x").exists()


def test_restore_with_its_defaults_gives_the_evaluations_bytes(tmp_path, models_root, chase_image):
    """What the report measures is what a user gets: `medrestore restore` with its defaults writes the
    pixels the evaluation stage scores (the whole image restored, tiles of 512 with 32 px overlap)."""
    from medrestore.cli import main
    from medrestore.degradations import corrupt, to_float, to_uint8
    from medrestore.models import load_model
    from medrestore.serving.inference import restore_array

    eye = chase_image[::3, ::3]
    noisy, _ = corrupt(eye, {"kind": "gaussian", "sigma": 25}, [7])
    Image.fromarray(noisy).save(tmp_path / "noisy.png")
    folder = models_root / "artifacts/models/denoise-g25/redae"
    assert main(["restore", "--model", str(folder), str(tmp_path / "noisy.png"), "--out", str(tmp_path / "out"),
                 "--no-progress"]) == 0
    model, _ = load_model(folder)
    evaluated = to_uint8(restore_array(model, to_float(noisy), tile=512, overlap=32))  # pipeline/evaluate.py's call
    assert np.array_equal(read_image(tmp_path / "out" / "noisy.png"), evaluated)
