"""Every training kind on real fundus patches: paired denoising, super-resolution, SRGAN, the two-way
GANs of Zhao2019; the NaN guard; the params wiring of dncnn-green's channel weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import cut_patches, noisy_copies
from medrestore.core.params import train_settings
from medrestore.degradations import corrupt, sr_pair
from medrestore.models import BASELINES, MODELS, load_model
from medrestore.training.callbacks import NonFiniteLossError
from medrestore.training.config import TrainConfig
from medrestore.training.engine import train_model
from medrestore.training.paired import RestorationModule

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("seeded_single_thread")


@pytest.fixture(scope="module")
def regions(chase_image):
    """Two disjoint parts of a real CHASE_DB1 fundus photograph (vessels, disc border): train, val."""
    return chase_image[380:572, 380:620], chase_image[600:700, 300:460]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2, axis=(1, 2, 3)) / 255.0**2
    return float(np.mean(10 * np.log10(1.0 / mse)))


@pytest.fixture(scope="module")
def denoise_data(regions):
    tr, va = cut_patches(regions[0], 24, 12), cut_patches(regions[1], 24, 12)
    return (tr, noisy_copies(tr, 1)), (va, noisy_copies(va, 2))


@pytest.fixture(scope="module")
def sr_data(regions):
    def pairs(region, salt):
        hr, lr = zip(*[sr_pair(p, {"kind": "downscale", "scale": 4},
                               [salt, i])[:2] for i, p in enumerate(cut_patches(region, 32, 16))])
        return np.stack(hr), np.stack(lr)

    return pairs(regions[0], 3), pairs(regions[1], 4)


@pytest.fixture(scope="module")
def unpaired_data(regions):
    """Blurred copies (the degraded domain); ``train_domain`` splits the train patches in two halves
    of the region (top: clean samples, bottom: degraded samples), as the corrupt stage does by image."""
    def blurred(clean, salt):
        return np.stack([corrupt(p, {"kind": "gaussian_blur", "sigma": 1.5},
                                 [salt, i])[0] for i, p in enumerate(clean)])

    tr, va = cut_patches(regions[0], 32, 16), cut_patches(regions[1], 32, 16)
    domain = (np.arange(len(tr)) >= len(tr) // 2).astype(np.uint8)
    return (tr, blurred(tr, 5)), (va, blurred(va, 6)), domain


def _cfg(model: str, **kw) -> TrainConfig:
    base = dict(model=model, max_steps=12, val_every=6, ckpt_every=6, batch_size=8, progress_bar=False, seed=5,
                channels_last=False)
    return TrainConfig(**{**base, **kw})


TINY_SRGAN = dict(model_kwargs={"n_blocks": 1, "features": 16}, disc_kwargs={"features": 8, "dense": 32})
TINY_CYCLEGAN = dict(model_kwargs={"features": 8, "n_blocks": 1}, disc_kwargs={"features": 8}, batch_size=4, lr=2e-4,
                     betas=[0.5, 0.999], loss="l1")


# --------------------------------------------------------------------------- registry
def test_registry_has_every_model_and_baseline_of_the_five_papers():
    assert set(MODELS) == {"cdae", "redae", "dncnn", "dncnn-green", "dncnn-blind", "irunet", "lapsrn", "srresnet",
                           "srgan", "cyclegan-fc", "cyclegan"}
    assert {n for n, s in MODELS.items() if s.trainer != "paired"} == {"srgan", "cyclegan", "cyclegan-fc"}
    assert {n: s.task for n, s in MODELS.items() if s.task != "denoise"} == {
        "lapsrn": "sr", "srresnet": "sr", "srgan": "sr", "cyclegan-fc": "enhance", "cyclegan": "enhance"}
    assert MODELS["cyclegan-fc"].options["cycle"] == "feature" and MODELS["cyclegan"].options["cycle"] == "image"
    assert {n: f.task for n, f in BASELINES.items()} == {"median": "denoise", "nlmeans": "denoise", "bm3d": "denoise",
                                                         "bicubic": "sr", "clahe": "enhance"}
    from medrestore.report.claims import PAPERS

    assert all(s.paper and any(label in s.paper for label in PAPERS) for s in MODELS.values())


# --------------------------------------------------------------------------- paired
def test_paired_denoiser_beats_its_noisy_input_on_validation(tmp_path, denoise_data):
    """LapSRN's non-SR mode starts as the identity (zero residual): training must add to it."""
    (tr_c, tr_n), (va_c, va_n) = denoise_data
    cfg = _cfg("lapsrn", model_kwargs={"scale": 1, "depth": 3, "features": 32}, loss="charbonnier", lr=1e-3,
               max_steps=80, val_every=40, batch_size=16)
    metrics = train_model(cfg, (tr_c, tr_n), (va_c, va_n), tmp_path / "m", tmp_path / "ck")
    noisy_psnr = _psnr(va_n, va_c)  # the identity's PSNR, about 21 dB at sigma 25
    assert metrics["best_val_psnr"] > noisy_psnr + 1.5, (metrics, noisy_psnr)


def test_super_resolution_trains_on_small_inputs_and_saves_its_scale(tmp_path, sr_data):
    (tr_hr, tr_lr), (va_hr, va_lr) = sr_data
    assert tr_lr.shape[1:3] == (8, 8) and tr_hr.shape[1:3] == (32, 32)
    cfg = _cfg("lapsrn", model_kwargs={"depth": 2, "upsample": "resize_conv"}, loss="multiscale_charbonnier", lr=1e-3)
    metrics = train_model(cfg, (tr_hr, tr_lr), (va_hr, va_lr), tmp_path / "m", tmp_path / "ck")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["scale"] == 4 and meta["kwargs"]["scale"] == 4 and metrics["scale"] == 4
    net, _ = load_model(tmp_path / "m")
    with torch.no_grad():
        assert net(torch.rand(1, 3, 10, 12)).shape == (1, 3, 40, 48)
    # the starting point (zero-initialised residuals) is the bilinear upsampling: training improves on it
    curve = pd.read_csv(tmp_path / "m" / "curve.csv")
    assert np.isfinite(metrics["best_val_psnr"]) and metrics["best_val_psnr"] >= curve["val_psnr"].dropna().iloc[0]


def test_a_denoiser_refuses_a_super_resolution_task(tmp_path, sr_data):
    from medrestore.core.io import InputError

    (tr_hr, tr_lr), (va_hr, va_lr) = sr_data
    with pytest.raises(InputError, match="cannot upscale"):
        train_model(_cfg("dncnn"), (tr_hr, tr_lr), (va_hr, va_lr), tmp_path / "m", tmp_path / "ck")


# --------------------------------------------------------------------------- GANs
def test_srgan_pretrains_then_trains_adversarially_and_saves_the_generator(tmp_path, sr_data):
    (tr_hr, tr_lr), (va_hr, va_lr) = sr_data
    cfg = _cfg("srgan", pretrain_steps=6, adv_weight=1e-3, lr=1e-4, **TINY_SRGAN)
    metrics = train_model(cfg, (tr_hr, tr_lr), (va_hr, va_lr), tmp_path / "m", tmp_path / "ck")
    curve = pd.read_csv(tmp_path / "m" / "curve.csv").set_index("step")
    assert {"d_loss", "g_adv"} <= set(curve.columns)
    assert curve["d_loss"].dropna().index.min() > 6  # no discriminator during pre-training
    assert np.isfinite(curve.loc[10, "d_loss"])
    net, meta = load_model(tmp_path / "m")
    assert type(net).__name__ == "SRResNet" and meta["scale"] == 4 and metrics["steps"] == 12
    assert not any("disc" in k for k in net.state_dict())


def test_two_way_gan_trains_on_unpaired_domains_and_validates_on_pairs(tmp_path, unpaired_data):
    train, val, domain = unpaired_data
    metrics = train_model(_cfg("cyclegan-fc", **TINY_CYCLEGAN), train, val, tmp_path / "m", tmp_path / "ck",
                          train_domain=domain)
    curve = pd.read_csv(tmp_path / "m" / "curve.csv")
    assert curve["val_psnr"].notna().sum() == 2 and np.isfinite(curve["d_loss"].dropna()).all()
    assert metrics["train_patches"] == len(domain)
    net, meta = load_model(tmp_path / "m")
    assert type(net).__name__ == "ResnetGenerator" and meta["model"] == "cyclegan-fc"
    with pytest.raises(Exception, match="unpaired"):
        train_model(_cfg("redae"), train, val, tmp_path / "p", tmp_path / "ck2", train_domain=domain)


@pytest.mark.parametrize("standard", [False, True])
def test_gan_runs_with_the_same_params_are_byte_identical(tmp_path, unpaired_data, standard):
    """The paper's networks, and the standard profile's (identity start, resize-convolutions, no
    norm, a history pool whose draws are seeded by step)."""
    train, val, domain = unpaired_data
    tiny = dict(TINY_CYCLEGAN)
    if standard:
        tiny["model_kwargs"] = {**tiny.get("model_kwargs", {}), "upsample": "resize", "residual": True, "norm": "none"}
        tiny["pool_size"] = 3
    for name in ("a", "b"):
        train_model(_cfg("cyclegan", **tiny, max_steps=8, val_every=4), train, val, tmp_path / name,
                    tmp_path / f"ck{name}", train_domain=domain)
    for f in ("model.safetensors", "metrics.json", "curve.csv", "model.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


# --------------------------------------------------------------------------- NaN guard
def test_exploding_learning_rate_stops_naming_run_and_step_and_keeps_the_last_good_checkpoint(tmp_path, denoise_data):
    (tr_c, tr_n), val = denoise_data
    cfg = _cfg("redae", lr=1e4, schedule="constant", ckpt_every=1, val_every=100, max_steps=100)
    with pytest.raises(NonFiniteLossError) as err:
        train_model(cfg, (tr_c, tr_n), val, tmp_path / "m", tmp_path / "ck", run="train@denoise-g25-redae")
    msg = str(err.value)
    assert "train@denoise-g25-redae" in msg and "at step" in msg and "lower the learning rate" in msg
    assert not (tmp_path / "m" / "model.safetensors").exists()
    ckpts = list((tmp_path / "ck").glob("*/last.ckpt"))
    assert len(ckpts) == 1 and str(ckpts[0]) in msg
    state = torch.load(ckpts[0], map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


# --------------------------------------------------------------------------- params wiring
def test_dncnn_green_run_weights_the_loss_red_green_blue_1_3_2():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    key = next(k for k, r in {**params["train"]["runs"],
                              **params["train"]["finetune"]}.items() if r["model"] == "dncnn-green")
    cfg = TrainConfig.from_params(train_settings(params["train"], key, 0))
    loss = RestorationModule(cfg).loss_fn
    pred = torch.zeros(2, 3, 4, 4)
    target = torch.zeros(2, 3, 4, 4)
    target[:, 0], target[:, 1, :2], target[:, 2, 0, 0] = 0.5, 1.0, 2.0  # per-channel MSE 0.25, 0.5, 0.25
    by_hand = (1 * 0.25 + 3 * 0.5 + 2 * 0.25) / 6  # Hayee2017 eq. 1, normalised by the weight sum
    assert torch.isclose(loss(pred, target), torch.tensor(by_hand))
    plain = RestorationModule(TrainConfig(model="dncnn")).loss_fn(pred, target)
    assert not torch.isclose(plain, torch.tensor(by_hand))


def test_chains_name_a_trained_first_run_and_merge_like_runs():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    train = params["train"]
    assert train["chains"], "Hayee2017's DnCNN -> SRGAN chain is a default run"
    methods = {(r["task"], r.get("method", r["model"])) for r in [*train["runs"].values(), *train["finetune"].values()]}
    for key, chain in train["chains"].items():
        assert (chain["task"], chain["first"]) in methods, "the first part is a model trained by a run of the same task"
        assert chain["downscale"] >= 2
        assert (chain["task"], chain["method"]) not in methods  # its own folder and report row
        cfg = TrainConfig.from_params(train_settings(train, key, 0))
        assert cfg.model == chain["model"] and cfg.loss == chain.get("overrides", {}).get("loss", cfg.loss)


def test_profiles_switch_the_budget_but_keep_the_papers_recipe():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    train = params["train"]
    assert train["profile"] == "standard" and set(train["profiles"]) == {"quick", "standard", "paper"}
    for key, entry in {**train["runs"], **train["finetune"]}.items():
        quick = train_settings({**train, "profile": "quick"}, key, 0)
        standard = train_settings({**train, "profile": "standard"}, key, 0)
        paper = train_settings({**train, "profile": "paper"}, key, 0)
        for layer in (quick, standard, paper):
            TrainConfig.from_params(layer)
        assert entry["model"] in MODELS
        assert paper.get("epochs", 0) > 0 or paper["max_steps"] > standard["max_steps"], key
        assert quick["max_steps"] < standard["max_steps"], key
        assert quick["loss"] == standard["loss"] == paper["loss"], key


def test_finetuned_runs_start_from_a_trained_model_of_the_same_network():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    train = params["train"]
    assert train["finetune"], "DnCNN at sigma 25 and DnCNN-green are fine-tuned (Hayee2017's recipe)"
    trained = {f"{r['task']}/{r.get('method', r['model'])}": r["model"] for r in train["runs"].values()}
    for key, entry in train["finetune"].items():
        # a model of train.runs, or of an earlier train.finetune entry (DnCNN-green starts from the
        # fine-tuned DnCNN): DVC orders the stages by that dependency, and no entry starts from itself.
        own = f"{entry['task']}/{entry['model']}"
        assert entry["init"] != own, f"{key}: starts from its own output"
        assert entry["init"] in trained, (
            f"{key}: init names a model trained by train.runs or an earlier train.finetune entry"
        )
        assert MODELS[trained[entry["init"]]].cls is MODELS[entry["model"]].cls
        cfg = TrainConfig.from_params(train_settings(train, key, 0))
        assert cfg.init_from == f"artifacts/models/{entry['init']}"
        trained[own] = entry["model"]
    # the chain of fine-tunings the standard report rests on: blind DnCNN -> DnCNN (sigma 25) -> DnCNN-green
    assert train["finetune"]["denoise-g25-dncnn"]["init"] == "denoise-blind/dncnn-blind"
    assert train["finetune"]["denoise-g25-dncnn-green"]["init"] == "denoise-g25/dncnn"
