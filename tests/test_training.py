import numpy as np
import pytest

from conftest import cut_patches, kill_and_resume, noisy_copies
from medrestore.training.config import TrainConfig
from medrestore.training.engine import train_model


@pytest.fixture(scope="module")
def fundus_pairs(retina):
    """24x24 patches from two disjoint parts of the real fundus photograph, sigma-25 noisy copies."""
    def cut(region):
        clean = cut_patches(region, 24, 12)
        return clean, noisy_copies(clean, 0)

    return cut(retina[500:679, 300:599]), cut(retina[800:899, 700:899])


def _train(tmp_path, pairs, name, **overrides):
    settings = {"max_steps": 60, "val_every": 20, "ckpt_every": 20, "batch_size": 16, "progress_bar": False, "seed": 3,
                **overrides}
    cfg = TrainConfig(model="redae", **settings)
    out = tmp_path / name
    metrics = train_model(cfg, pairs[0], pairs[1], out, tmp_path / f"ckpt-{name}")
    return out, metrics


def test_training_reduces_loss_and_writes_outputs(tmp_path, fundus_pairs):
    import pandas as pd

    out, metrics = _train(tmp_path, fundus_pairs, "a", lr=1e-3)
    assert sorted(p.name for p in out.iterdir()) == ["curve.csv", "metrics.json", "model.json", "model.safetensors"]
    curve = pd.read_csv(out / "curve.csv")
    assert list(curve.columns) == ["step", "train_loss", "lr", "val_loss", "val_psnr"]
    losses = curve["train_loss"].dropna().to_numpy()
    assert losses[-1] < 0.1 * losses[0]
    val = curve["val_psnr"].dropna().to_numpy()
    assert len(val) == 3 and metrics["best_val_psnr"] == max(val) > val[0]
    assert metrics["steps"] == 60


def test_validation_can_use_an_evenly_spaced_subset(tmp_path, fundus_pairs):
    from medrestore.training.engine import validation_subset

    clean, noisy = fundus_pairs[1]
    sub_clean, sub_noisy = validation_subset((clean, noisy), 10)
    assert len(sub_clean) == 10 and np.array_equal(sub_clean[0], clean[0]) and np.array_equal(sub_clean[-1], clean[-1])
    assert validation_subset((clean, noisy), 0)[0] is clean
    _, metrics = _train(tmp_path, fundus_pairs, "sub", val_patches=10, max_steps=20, val_every=20)
    assert metrics["val_patches"] == 10 < len(clean)


def test_same_params_give_byte_identical_outputs(tmp_path, fundus_pairs):
    a, _ = _train(tmp_path, fundus_pairs, "a")
    b, _ = _train(tmp_path, fundus_pairs, "b")
    for name in ("model.safetensors", "metrics.json", "curve.csv", "model.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_exploding_loss_stops_with_a_clear_error(tmp_path, fundus_pairs):
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        _train(tmp_path, fundus_pairs, "c", lr=1e8, schedule="constant")
    assert not (tmp_path / "c" / "model.safetensors").exists()


RESUME_SCRIPT = """
import sys, numpy as np
from pathlib import Path
from medrestore.training.config import TrainConfig
from medrestore.training.engine import train_model
d = Path(sys.argv[1]); out = Path(sys.argv[2])
L = lambda n: np.load(d / n, mmap_mode="r")
cfg = TrainConfig(model="redae", max_steps=60, val_every=10, ckpt_every=5, batch_size=8, progress_bar=False, seed=11)
train_model(cfg, (L("ct.npy"), L("nt.npy")), (L("cv.npy"), L("nv.npy")), out, d / "ckpt")
"""


def test_killed_training_resumes_and_ends_byte_identical(tmp_path, fundus_pairs):
    (tr_c, tr_n), (va_c, va_n) = fundus_pairs
    kill_and_resume(tmp_path, RESUME_SCRIPT, {"ct.npy": tr_c, "nt.npy": tr_n, "cv.npy": va_c, "nv.npy": va_n},
                    settle=0.5)


def test_curve_records_step_one_and_every_tenth_step_with_its_own_loss(tmp_path):
    """The paired module logs its loss only on the curve's steps: each recorded step has a loss, and
    not a stale one carried over from an earlier logged step."""
    import numpy as np
    import pandas as pd

    from medrestore.training.callbacks import on_curve
    from medrestore.training.config import TrainConfig
    from medrestore.training.engine import train_model

    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (64, 24, 24, 3), dtype=np.uint8)
    noisy = np.clip(clean.astype(int) + rng.normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
    cfg = TrainConfig.from_params({"model": "cdae", "batch_size": 4, "max_steps": 21, "val_every": 21, "ckpt_every": 21,
                                   "progress_bar": False, "seed": 3, "lr": 1e-3, "schedule": "constant"})
    train_model(cfg, (clean, noisy), (clean[:8], noisy[:8]), tmp_path / "out", tmp_path / "ckpt")
    curve = pd.read_csv(tmp_path / "out" / "curve.csv")
    logged = curve.dropna(subset=["train_loss"])
    assert logged["step"].tolist() == [1, 10, 20] == [s for s in range(1, 22) if on_curve(s)]
    assert logged["train_loss"].nunique() == 3


def test_metrics_say_whether_the_run_converged_by_its_own_curve(tmp_path, fundus_pairs):
    from medrestore.training.convergence import (
        convergence,
        curve_points,
        model_convergence,
    )

    out, metrics = _train(tmp_path, fundus_pairs, "conv", lr=1e-3, max_steps=80, val_every=20)
    assert isinstance(metrics["converged"], bool)
    expected = convergence(curve_points(out / "curve.csv"), 80)
    assert metrics["converged"] == expected["converged"]
    assert metrics["last_quarter_gain_db"] == expected["last_quarter_gain_db"]
    assert model_convergence(out)["converged"] == metrics["converged"]
    # the last quarter starts at step 60: the gain is the best PSNR minus the best up to step 60
    val = [p for _, p in curve_points(out / "curve.csv")]
    assert metrics["last_quarter_gain_db"] == round(max(val) - max(val[:3]), 4)


def test_fine_tuning_starts_from_the_named_model_and_refuses_another_network(tmp_path, fundus_pairs):
    import torch

    from medrestore.core.io import InputError
    from medrestore.models import build_model, load_model
    from medrestore.training.engine import start_from

    base, _ = _train(tmp_path, fundus_pairs, "base", lr=1e-3, max_steps=40)
    fresh = build_model("redae")
    start_from(fresh, base, "t")
    trained, _ = load_model(base)
    for k, v in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    with pytest.raises(InputError, match="holds a REDAE, not a DnCNN"):
        start_from(build_model("dncnn"), base, "t")
    with pytest.raises(InputError, match="no model.json"):
        start_from(build_model("redae"), tmp_path / "missing", "t")
    # a fine-tuned run starts where the base ended: its first validation is at least the base's best
    # minus what 10 steps at a small rate can lose
    _, tuned = _train(tmp_path, fundus_pairs, "tuned", lr=1e-5, max_steps=20, val_every=10, init_from=str(base))
    _, scratch = _train(tmp_path, fundus_pairs, "scratch", lr=1e-5, max_steps=20, val_every=10)
    assert tuned["best_val_psnr"] > scratch["best_val_psnr"] + 1.0


def test_fov_loss_counts_only_the_pixels_inside_the_fov(chase_image):
    """A real CHASE_DB1 patch across its FOV edge: with the mask, the loss and the validation PSNR do not
    see the pixels outside the FOV (any value there, no gradient), as the evaluation's psnr_fov does not."""
    import torch

    from medrestore.data.fov import detect_fov
    from medrestore.training.paired import RestorationModule, inside_fov, psnr_per_image

    fov = detect_fov(chase_image)
    y = fov.shape[0] // 2 - 24
    x = int(np.flatnonzero(fov[y + 24]).min()) - 24  # a 48 px window across the FOV's left edge
    clean = chase_image[y : y + 48, x : x + 48]
    mask = fov[y : y + 48, x : x + 48]
    assert 0.2 < mask.mean() < 0.8
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float()[None] / 255  # noqa: E731
    target, m = to_t(clean), torch.from_numpy(mask.astype(np.float32))[None, None]
    module = RestorationModule(TrainConfig(model="redae", fov_loss=True, seed=0))
    noisy = (target + 0.1 * torch.randn_like(target, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    loss, _ = module.content_loss(noisy, target, m)
    garbage = torch.where(m > 0, target, torch.rand_like(target))  # any target outside the FOV
    assert float(module.content_loss(noisy, garbage, m)[0]) == pytest.approx(float(loss), rel=1e-6)
    pred = torch.zeros_like(target, requires_grad=True)
    module.loss_fn(inside_fov(pred, target, m), target).backward()
    assert float(pred.grad[m.expand_as(pred) == 0].abs().max()) == 0.0 and float(pred.grad.abs().max()) > 0
    # the validation PSNR over the FOV pixels is the evaluation's psnr_fov of the same pixels
    out = (target + torch.where(m > 0, 0.05, 0.2)).clamp(0, 1)  # worse outside the FOV
    err = ((out - target) ** 2)[m.expand_as(out) > 0].mean()
    assert float(psnr_per_image(out, target, m)[0]) == pytest.approx(float(10 * torch.log10(1 / err)), rel=1e-5)
    assert float(psnr_per_image(out, target, m)[0]) != pytest.approx(float(psnr_per_image(out, target)[0]), rel=1e-3)


def test_fov_loss_without_masks_names_the_fix(tmp_path, fundus_pairs):
    from medrestore.core.io import InputError

    with pytest.raises(InputError, match=r"fov_loss needs the patches' FOV masks.*Fix: rerun the patchify stage"):
        _train(tmp_path, fundus_pairs, "nomask", fov_loss=True)


def test_fov_loss_trains_on_masks_and_changes_what_is_learned(tmp_path, fundus_pairs):
    """The same run with every patch's outside-FOV share masked gives other weights (the masks reach the loss)."""
    (tr, va) = fundus_pairs
    masks = [np.ones(a[0].shape[:3], np.uint8) for a in (tr, va)]
    for mk in masks:
        mk[:, :, :8] = 0  # the left third of every patch outside the FOV
    settings = {"max_steps": 20, "val_every": 10, "ckpt_every": 10, "batch_size": 16, "progress_bar": False, "seed": 3}
    a = train_model(TrainConfig(model="redae", **settings), tr, va, tmp_path / "a", tmp_path / "ck")
    b = train_model(TrainConfig(model="redae", fov_loss=True, **settings), tr, va, tmp_path / "b", tmp_path / "ck",
                    fov=tuple(masks))
    assert (tmp_path / "a" / "model.safetensors").read_bytes() != (tmp_path / "b" / "model.safetensors").read_bytes()
    assert a["best_val_psnr"] != b["best_val_psnr"]
