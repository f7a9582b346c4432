"""Hayee2017's denoise -> shrink -> super-resolve pipeline saved as one model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medrestore.core.io import InputError
from medrestore.models import build_model, load_model, save_model
from medrestore.models.chain import Chain, Downscale
from medrestore.serving.inference import restore_array
from medrestore.training.chain import (
    assemble_chain,
    chain_pairs,
    first_stage_inputs,
    subset_indices,
)

PARTS = [
    {"model": "dncnn", "kwargs": {"depth": 4, "features": 8}},
    {"step": "downscale", "scale": 4},
    {"model": "srresnet", "kwargs": {"n_blocks": 1, "features": 8, "scale": 4}},
]


def _to_t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32).transpose(2, 0, 1) / 255.0)[None]


def test_downscale_matches_pil_bicubic_reduction_on_a_fundus_crop(chase_image):
    crop = chase_image[300:428, 400:528]
    ours = Downscale(4)(_to_t(crop))[0].numpy().transpose(1, 2, 0) * 255.0
    pil = np.asarray(Image.fromarray(crop).resize((32, 32), Image.Resampling.BICUBIC), dtype=np.float32)
    # torch's antialiased bicubic and PIL's use the same support; they differ by rounding only
    assert np.abs(ours - pil).mean() < 1.0
    with pytest.raises(ValueError, match="multiple of 4"):
        Downscale(4)(torch.zeros(1, 3, 30, 32))


def test_chain_runs_its_parts_in_order_and_keeps_the_input_size(chase_image):
    torch.manual_seed(0)
    chain = build_model("chain", parts=PARTS).eval()
    assert isinstance(chain, Chain) and chain.scale == 1
    x = _to_t(chase_image[300:402, 400:498])  # 102 x 98: not a multiple of 4, padded then cropped back
    with torch.no_grad():
        out = chain(x)
        assert out.shape == x.shape
        manual = chain.parts[2](chain.parts[1](chain.parts[0](x[..., :100, :96]).clamp(0, 1)))
    assert torch.allclose(chain(x[..., :100, :96]), manual, atol=1e-6)
    with pytest.raises(ValueError, match="step"):
        Chain([{"step": "blur"}])


def test_assembled_chain_loads_like_any_model_and_restores_a_whole_image(tmp_path, chase_image):
    torch.manual_seed(1)
    first, last = build_model("dncnn", depth=4,
                              features=8), build_model("srresnet", n_blocks=1, features=8, scale=4, skip="bicubic")
    save_model(first, tmp_path / "first", name="dncnn", kwargs={"depth": 4, "features": 8},
               extra={"task_kind": "denoise", "scale": 1})
    kw = {"n_blocks": 1, "features": 8, "scale": 4, "skip": "bicubic"}
    save_model(last, tmp_path / "last", name="srresnet", kwargs=kw,
               extra={"task_kind": "sr", "scale": 4, "task": "denoise-g25"})
    meta = assemble_chain(tmp_path / "first", tmp_path / "last", 4, extra={"first": "first"})
    assert (
        meta["model"] == "chain"
        and meta["scale"] == 1
        and meta["task_kind"] == "denoise"
        and meta["task"] == "denoise-g25"
    )
    assert meta["parameters"] == sum(p.numel() for p in first.parameters()) + sum(p.numel() for p in last.parameters())
    chain, _ = load_model(tmp_path / "last")
    image = chase_image[200:330, 300:450].astype(np.float32) / 255.0
    out = restore_array(chain, image, tile=64, overlap=16)
    assert out.shape == image.shape and np.isfinite(out).all()
    with torch.no_grad():
        x = torch.from_numpy(image.transpose(2, 0, 1).copy())[None]
        direct = last(Downscale(4)(first.eval()(x[..., :128, :148]).clamp(0, 1)))
    whole = restore_array(chain, image[:128, :148], tile=512, overlap=0, optimise=False)
    assert np.allclose(whole, direct[0].clamp(0, 1).numpy().transpose(1, 2, 0), atol=1e-5)


def test_first_stage_inputs_are_reduced_uint8_and_the_subset_is_seeded(chase_image):
    patches = np.stack([chase_image[y : y + 40, x : x + 40] for y in (300, 340) for x in (400, 440, 480)])
    identity = torch.nn.Identity()
    out = first_stage_inputs(identity, patches, 4, batch=4)
    assert out.shape == (6, 10, 10, 3) and out.dtype == np.uint8
    pil = np.stack([np.asarray(Image.fromarray(p).resize((10, 10), Image.Resampling.BICUBIC)) for p in patches])
    assert np.abs(out.astype(int) - pil.astype(int)).mean() < 1.0
    a, b = subset_indices(100, 10, 7, "train"), subset_indices(100, 10, 7, "train")
    assert np.array_equal(a, b) and len(np.unique(a)) == 10 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, subset_indices(100, 10, 7, "val"))
    assert np.array_equal(subset_indices(5, 10, 7, "train"), np.arange(5))


def test_chain_pairs_feed_the_saved_first_model_outputs_of_a_seeded_subset(tmp_path, chase_image):
    # 36
    patches = np.stack([chase_image[y : y + 40, x : x + 40] for y in range(200, 440, 40) for x in range(300, 540, 40)])
    noisy = np.clip(patches.astype(int) + np.random.default_rng(0).normal(0, 25, patches.shape), 0,
                    255).astype(np.uint8)
    with pytest.raises(InputError, match="no trained model for the first part of chain 'c'.*dvc repro"):
        chain_pairs(tmp_path / "first", "c", (patches, noisy), (patches, noisy), 4, None, 0)
    torch.manual_seed(2)
    first = build_model("dncnn", depth=3, features=8)
    save_model(first, tmp_path / "first", name="dncnn", kwargs={"depth": 3, "features": 8})
    (tr_clean, tr_in), (va_clean, va_in) = chain_pairs(tmp_path / "first", "c", (patches, noisy),
                                                       (patches[:10], noisy[:10]), 4, [12, None], 5)
    idx = subset_indices(36, 12, 5, "train")
    assert np.array_equal(tr_clean, patches[idx]) and tr_in.shape == (12, 10, 10, 3)
    # the saved model, reloaded, gives the same inputs
    assert np.array_equal(tr_in, first_stage_inputs(first, noisy[idx], 4))
    assert np.array_equal(va_clean, patches[:10]) and va_in.shape == (10, 10, 10, 3)
    assert not np.array_equal(tr_in, first_stage_inputs(torch.nn.Identity(), noisy[idx], 4))
