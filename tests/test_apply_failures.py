"""`medrestore restore` on the inputs of issue 15 that used to give silently wrong outputs or tracebacks.

Real files only: CHASE_DB1 crops, saved as an EXIF-rotated JPEG, an animated GIF, multi-frame
PNG/WebP/TIFF and a 16-bit colour TIFF with an orientation tag. The models are real model folders
(``save_model``) of a small DnCNN whose last convolution is set so that its output is known: zero
(the network is the identity, ``x - 0``) or a constant bias (it adds a colour, as a network trained
only on fundus photographs paints black).
"""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps, ImageSequence

from medrestore.cli import main
from medrestore.core.io import InputError, read_image
from medrestore.models import build_model, save_model
from medrestore.serving.restore import MIN_SIDE, read_native, restore_files

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

KW = {"depth": 3, "features": 8}
SHIFT = (106, 94, 72)  # the colour issue 15 saw a black pixel come back as


def _dncnn(folder, bias=(0.0, 0.0, 0.0)):
    """A DnCNN model folder whose output is ``input - bias`` (last convolution: zero weights)."""
    torch.manual_seed(0)
    model = build_model("dncnn", **KW).eval()
    last = model.body[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor(bias))
    save_model(model, folder, name="dncnn", kwargs=KW)
    return folder


@pytest.fixture(scope="module")
def identity(tmp_path_factory):
    return _dncnn(tmp_path_factory.mktemp("identity") / "model")


@pytest.fixture(scope="module")
def paints_black(tmp_path_factory):
    return _dncnn(tmp_path_factory.mktemp("shift") / "model", tuple(-v / 255.0 for v in SHIFT))


def _quiet(*_):
    pass


# ------------------------------------------------------------------ 1. output names that collide
def test_two_inputs_with_one_file_name_are_refused_before_anything_is_restored(tmp_path, identity, chase_image, capsys):
    for folder, crop in (("dupA", chase_image[300:364, 300:364]), ("dupB", chase_image[400:464, 400:464])):
        (tmp_path / folder).mkdir()
        Image.fromarray(crop).save(tmp_path / folder / "x.png")
    code = main(["restore", "--model", str(identity), str(tmp_path / "dupA/x.png"), str(tmp_path / "dupB/x.png"),
                 "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert str(tmp_path / "dupA/x.png") in err and str(tmp_path / "dupB/x.png") in err and "Fix:" in err
    assert not (tmp_path / "out").exists()  # nothing restored, nothing written


def test_one_file_listed_twice_is_restored_once(tmp_path, identity, chase_image):
    Image.fromarray(chase_image[300:364, 300:364]).save(tmp_path / "x.png")
    logged = []
    written, errors = restore_files(str(identity), [str(tmp_path / "x.png"), str(tmp_path / "." / "x.png")],
                                    tmp_path / "out",
                                    progress=False, log=logged.append)
    assert errors == [] and written == [tmp_path / "out" / "x.png"]
    assert any("listed more than once" in line for line in logged)


# ------------------------------------------------------------------ 2. EXIF orientation
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_jpeg_comes_back_displayed_like_its_input(tmp_path, identity, chase_image, orientation):
    crop = chase_image[250:298, 200:280]  # 48 x 80: a rotation changes the shape
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(crop).save(tmp_path / "rot.jpg", quality=95, exif=exif.tobytes())
    with Image.open(tmp_path / "rot.jpg") as im:
        shown_in = np.asarray(ImageOps.exif_transpose(im).convert("RGB")).astype(int)
    written, errors = restore_files(str(identity), [str(tmp_path / "rot.jpg")], tmp_path / "out", fov="none",
                                    progress=False, log=_quiet)
    assert errors == []
    with Image.open(written[0]) as im:
        assert im.format == "JPEG"
        assert im.getexif().get(0x0112, 1) == 1  # written upright, no tag left to rotate it again
        shown_out = np.asarray(ImageOps.exif_transpose(im).convert("RGB")).astype(int)
    assert shown_out.shape == shown_in.shape
    assert np.abs(shown_out - shown_in).mean() < 2  # the identity model: only the JPEG re-encoding differs


def _png_with_orientation(path, rgb16, orientation):
    """A 16-bit colour PNG (OpenCV) with an eXIf chunk carrying ``orientation`` before its pixels."""
    import struct
    import zlib

    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb16[..., ::-1]))
    assert ok
    data = buf.tobytes()
    exif = Image.Exif()
    exif[0x0112] = orientation
    payload = exif.tobytes()[6:]  # without the JPEG "Exif\0\0" prefix
    chunk = struct.pack(">I", len(payload)) + b"eXIf" + payload + struct.pack(">I", zlib.crc32(b"eXIf" + payload))
    at = 8 + 25  # signature, IHDR
    path.write_bytes(data[:at] + chunk + data[at:])


@pytest.mark.parametrize("suffix,orientation", [(".tif", o) for o in range(2, 9)] + [(".png", 6), (".png", 3)])
def test_sixteen_bit_colour_orientation_applied_as_pillow_does(tmp_path, chase_image, suffix, orientation):
    import tifffile

    rgb16 = chase_image[250:290, 200:264].astype(np.uint16) * 257 + 100
    path = tmp_path / f"c16{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, rgb16, photometric="rgb", extratags=[(274, "H", 1, orientation, True)])
    else:
        _png_with_orientation(path, rgb16, orientation)
    img = read_native(path)
    assert img.bits == 16  # 16 bits kept
    with Image.open(path) as im:  # Pillow reads it at 8 bits, as it is displayed
        assert im.getexif().get(0x0112) == orientation
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB")).astype(int)
    got = np.round(img.pixels * 255).astype(int)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1
    # all 16 bits
    assert np.array_equal(np.round(img.pixels * 65535).astype(np.uint16), _orient_like_pillow(rgb16, orientation))


def _orient_like_pillow(arr, orientation):
    """``arr`` transposed channel by channel with Pillow (which cannot hold 16-bit colour in one image)."""
    planes = []
    for c in range(arr.shape[2]):
        im = Image.fromarray(arr[..., c])
        exif = im.getexif()
        exif[0x0112] = orientation
        planes.append(np.asarray(ImageOps.exif_transpose(im)))
    return np.stack(planes, axis=2)


# ------------------------------------------------------------------ 2. animated GIF, multi-frame files
def _frames(chase_image, n=3):
    return [chase_image[300 + 20 * i : 364 + 20 * i, 300:380] for i in range(n)]


def test_animated_gif_keeps_every_frame_durations_and_loop(tmp_path, identity, chase_image):
    frames = [Image.fromarray(f) for f in _frames(chase_image)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=[100, 200, 300], loop=0)
    with Image.open(tmp_path / "anim.gif") as im:
        shown_in = [np.asarray(f.convert("RGB")).astype(int) for f in ImageSequence.Iterator(im)]
    written, errors = restore_files(str(identity), [str(tmp_path / "anim.gif")], tmp_path / "out", fov="none",
                                    progress=False, log=_quiet)
    assert errors == [] and written == [tmp_path / "out" / "anim.gif"]
    with Image.open(written[0]) as im:
        assert im.format == "GIF" and im.n_frames == 3 and im.info.get("loop") == 0
        durations, shown_out = [], []
        for frame in ImageSequence.Iterator(im):
            durations.append(frame.info["duration"])
            shown_out.append(np.asarray(frame.convert("RGB")).astype(int))
    assert durations == [100, 200, 300]
    for a, b in zip(shown_in, shown_out):
        assert np.abs(a - b).mean() < 3  # identity model; GIF's 256-colour palette is chosen again


@pytest.mark.parametrize("fmt,name", [("PNG", "anim.png"), ("WEBP", "anim.webp"), ("TIFF", "pages.tif")])
def test_multi_frame_png_webp_and_tiff_keep_every_frame(tmp_path, identity, chase_image, fmt, name):
    frames = [Image.fromarray(f) for f in _frames(chase_image, 2)]
    extra = {"duration": [120, 80], "loop": 2} if fmt != "TIFF" else {}
    frames[0].save(tmp_path / name, format=fmt, save_all=True, append_images=frames[1:],
                   **({"lossless": True} if fmt == "WEBP" else {}), **extra)
    written, errors = restore_files(str(identity), [str(tmp_path / name)], tmp_path / "out", fov="none", progress=False,
                                    log=_quiet)
    assert errors == []
    with Image.open(written[0]) as im:
        assert im.format == fmt and im.n_frames == 2
        if fmt != "TIFF":
            assert im.info.get("loop") == 2
        for frame, expected in zip(ImageSequence.Iterator(im), _frames(chase_image, 2)):
            assert np.array_equal(np.asarray(frame.convert("RGB")), expected)  # lossless formats, identity model


# ------------------------------------------------------------------ 2. tiny and black images
def test_black_image_stays_black_and_a_one_pixel_image_is_refused(tmp_path, paints_black, chase_image, capsys):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "black.png")
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tmp_path / "pixel.png")
    Image.fromarray(chase_image[400:464, 400:464]).save(tmp_path / "eye.png")
    code = main(["restore", "--model", str(paints_black), str(tmp_path / "black.png"), str(tmp_path / "pixel.png"),
                 str(tmp_path / "eye.png"), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert np.array_equal(read_image(tmp_path / "out" / "black.png"), np.zeros((64, 64, 3), np.uint8))
    assert "pixel.png: 1x1 pixels" in err and f"{MIN_SIDE}x{MIN_SIDE}" in err and "Fix:" in err
    assert not (tmp_path / "out" / "pixel.png").exists()
    # The model is applied to an image with content: it adds its colour there (green and blue: red clips at 255).
    eye = read_image(tmp_path / "out" / "eye.png").astype(int) - chase_image[400:464, 400:464]
    assert np.allclose(eye[..., 1:].reshape(-1, 2).mean(axis=0), SHIFT[1:], atol=2)


# ------------------------------------------------------------------ 3. --out checked first
def _unwritable(tmp_path):
    if os.geteuid() == 0:  # root writes through permission bits; sysfs refuses new entries to everyone
        return "/sys/medrestore-test-out"
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    return str(ro / "out")


def test_out_that_is_a_file_or_not_writable_is_refused_before_restoring(tmp_path, identity, chase_image, capsys):
    Image.fromarray(chase_image[300:364, 300:364]).save(tmp_path / "x.png")
    (tmp_path / "taken").write_text("a file")
    for out, words in ((str(tmp_path / "taken"), "an existing file"), (_unwritable(tmp_path), "cannot")):
        logged = []
        with pytest.raises(InputError, match="--out") as info:
            restore_files(str(identity), [str(tmp_path / "x.png")], out, progress=False, log=logged.append)
        assert out in str(info.value) and words in str(info.value) and "Fix:" in str(info.value)
        assert logged == []  # nothing restored
        assert main(["restore", "--model", str(identity), str(tmp_path / "x.png"), "--out", out, "--no-progress"]) == 2
        assert out in capsys.readouterr().err
    assert (tmp_path / "taken").read_text() == "a file"


def test_an_output_that_cannot_be_written_fails_that_file_only(tmp_path, identity, chase_image, capsys):
    for name in ("x.png", "y.png"):
        Image.fromarray(chase_image[300:364, 300:364]).save(tmp_path / name)
    (tmp_path / "out" / "x.png").mkdir(parents=True)  # a folder where the output goes
    code = main(["restore", "--model", str(identity), str(tmp_path / "x.png"), str(tmp_path / "y.png"), "--out",
                 str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and f"{tmp_path / 'out' / 'x.png'}: a folder" in err and "1 restored, 1 failed" in err
    assert (tmp_path / "out" / "y.png").is_file()


# ------------------------------------------------------------------ 3. model.json that does not fit
@pytest.mark.parametrize("text,words", [
    ('{"model": "dncnn", "kwargs": {"depth": 3', "not valid JSON"),
    (json.dumps({"model": "redae", "kwargs": {}}), "do not fit"),
    (json.dumps({"model": "dncnn", "kwargs": {"depth": 5, "features": 8}}), "do not fit"),
    (json.dumps({"model": "resnet50", "kwargs": {}}), "resnet50"),
    (json.dumps({"model": "dncnn", "kwargs": {"width": 3}}), "cannot build"),
])
def test_broken_model_json_is_a_clear_error_naming_it(tmp_path, chase_image, capsys, text, words):
    folder = _dncnn(tmp_path / "model")
    (folder / "model.json").write_text(text)
    Image.fromarray(chase_image[300:364, 300:364]).save(tmp_path / "x.png")
    code = main(["restore", "--model", str(folder), str(tmp_path / "x.png"), "--out", str(tmp_path / "out"),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "model.json" in err and words in err and "Fix:" in err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ tiling values, weights and outputs that are not
# numbers
@pytest.mark.parametrize("flag,value", [("--tile", "0"), ("--tile", "-8"), ("--overlap", "-10")])
def test_invalid_tile_or_overlap_is_refused_before_restoring(tmp_path, identity, chase_image, capsys, flag, value):
    Image.fromarray(chase_image[300:364, 300:364]).save(tmp_path / "x.png")
    code = main(["restore", "--model", str(identity), str(tmp_path / "x.png"), "--out", str(tmp_path / "out"), flag,
                 value, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{flag} {value}" in err and "Fix:" in err
    assert not (tmp_path / "out").exists()


def test_weights_holding_nan_are_refused_at_load(tmp_path, chase_image, capsys):
    from safetensors.torch import load_file, save_file

    folder = _dncnn(tmp_path / "model")
    state = load_file(str(folder / "model.safetensors"))
    key = next(k for k in state if k.endswith("weight"))
    state[key][0].view(-1)[0] = float("nan")
    save_file(state, str(folder / "model.safetensors"))
    Image.fromarray(chase_image[300:364, 300:364]).save(tmp_path / "x.png")
    code = main(["restore", "--model", str(folder), str(tmp_path / "x.png"), "--out", str(tmp_path / "out"),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "model.safetensors" in err and "NaN" in err and key in err and "Fix:" in err
    assert not (tmp_path / "out" / "x.png").exists()


def test_non_finite_output_is_refused_and_not_written(tmp_path, chase_image, capsys):
    folder = tmp_path / "model"
    torch.manual_seed(0)
    model = build_model("dncnn", **KW).eval()
    with torch.no_grad():  # finite weights whose output overflows float32
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(torch.sign(torch.randn_like(m.weight)) * 1e30)
    save_model(model, folder, name="dncnn", kwargs=KW)
    Image.fromarray(chase_image[300:364, 300:364]).save(tmp_path / "x.png")
    code = main(["restore", "--model", str(folder), str(tmp_path / "x.png"), "--out", str(tmp_path / "out"),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "NaN or infinite" in err and "x.png" in err and "Fix:" in err
    assert not (tmp_path / "out" / "x.png").exists()


def test_sixteen_bit_rgba_png_keeps_its_sixteen_bit_alpha(tmp_path, identity, chase_image):
    import cv2

    rgb16 = chase_image[300:364, 300:364].astype(np.uint16) * 257 + 3
    alpha = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))
    cv2.imwrite(str(tmp_path / "x.png"), np.dstack([rgb16[..., ::-1], alpha]))
    written, errors = restore_files(str(identity), [str(tmp_path / "x.png")], tmp_path / "out", progress=False,
                                    log=_quiet)
    assert errors == []
    back = cv2.imread(str(written[0]), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and back.shape == (64, 64, 4)
    assert np.array_equal(back[..., 3], alpha)
    assert np.abs(back[..., 2::-1].astype(int) - rgb16).max() <= 257  # the identity network, at 16 bits


# ------------------------------------------------------------------ files that are not the run's own
def test_output_that_is_another_input_is_never_overwritten(tmp_path, identity, chase_image, capsys):
    for folder, crop in (("inA", chase_image[300:364, 300:364]), ("inB", chase_image[400:464, 400:464])):
        (tmp_path / folder).mkdir()
        Image.fromarray(crop).save(tmp_path / folder / "x.png")
    (tmp_path / "inB" / "link.png").symlink_to(tmp_path / "inA" / "x.png")
    original = (tmp_path / "inB/x.png").read_bytes()
    # inB/x.png, another photograph: a file this run did not write
    code = main(["restore", "--model", str(identity), str(tmp_path / "inA/x.png"), "--out", str(tmp_path / "inB"),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "already exists" in err and "--overwrite" in err and "Fix:" in err
    assert (tmp_path / "inB/x.png").read_bytes() == original
    # inA/x.png is an input (under another name): refused even with --overwrite
    code = main(["restore", "--model", str(identity), str(tmp_path / "inB/link.png"), str(tmp_path / "inB/x.png"),
                 "--out",
                 str(tmp_path / "inA"), "--overwrite", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "also an input" in err and "Fix:" in err
    assert (tmp_path / "inA/x.png").read_bytes() == (tmp_path / "inB/link.png").read_bytes() != original


def test_existing_output_is_replaced_only_with_overwrite(tmp_path, identity, chase_image, capsys):
    Image.fromarray(chase_image[300:364, 300:364]).save(tmp_path / "x.png")
    (tmp_path / "out").mkdir()
    Image.fromarray(chase_image[0:64, 0:64]).save(tmp_path / "out" / "x.png")
    other = (tmp_path / "out" / "x.png").read_bytes()
    args = ["restore", "--model", str(identity), str(tmp_path / "x.png"), "--out", str(tmp_path / "out"),
            "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "out" / "x.png") in err and "--overwrite" in err and "Fix:" in err
    assert (tmp_path / "out" / "x.png").read_bytes() == other
    assert main([*args, "--overwrite"]) == 0
    assert "replaced (--overwrite)" in capsys.readouterr().out
    assert (tmp_path / "out" / "x.png").read_bytes() != other


# ------------------------------------------------------------------ interrupted, huge, misleading
def test_interrupt_during_restore_is_a_message_not_a_traceback(tmp_path, identity, chase_image, capsys, monkeypatch):
    import medrestore.serving.restore as apply

    Image.fromarray(chase_image[300:364, 300:364]).save(tmp_path / "x.png")

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(apply, "restore_array", interrupted)
    code = main(["restore", "--model", str(identity), str(tmp_path / "x.png"), "--out", str(tmp_path / "out"),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "x.png").exists()


def test_image_above_the_pixel_limit_is_refused_before_opencv_decodes_it(tmp_path, chase_image, monkeypatch):
    import cv2

    cv2.imwrite(str(tmp_path / "x.png"), chase_image[300:364, 300:364].astype(np.uint16) * 257)
    monkeypatch.setenv("MEDRESTORE_MAX_PIXELS", "1000")
    decoded = []
    real = cv2.imread
    monkeypatch.setattr(cv2, "imread", lambda *a, **k: decoded.append(a) or real(*a, **k))
    with pytest.raises(InputError, match="above the limit of 1000 pixels"):
        read_native(tmp_path / "x.png")
    assert decoded == []


def test_model_name_outside_the_repository_says_so(tmp_path, monkeypatch, capsys, chase_image):
    Image.fromarray(chase_image[300:364, 300:364]).save(tmp_path / "x.png")
    monkeypatch.chdir(tmp_path)
    code = main(["restore", "--model", "denoise-g25/dncnn", "x.png", "--out", "out", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "not inside the medrestore repository" in err and "Fix:" in err and "dvc repro" not in err


def test_folder_and_float_tiff_inputs_are_named_for_what_they_are(tmp_path, chase_image):
    import tifffile

    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError, match="a folder, not an image file"):
        read_native(tmp_path / "folder")
    tifffile.imwrite(tmp_path / "f.tif", chase_image[300:364, 300:364].astype(np.float32) / 255.0)
    with pytest.raises(InputError, match="floating-point") as info:
        read_native(tmp_path / "f.tif")
    assert "Fix:" in str(info.value)
