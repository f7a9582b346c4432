import numpy as np
import pytest

from medrestore.degradations import corrupt
from medrestore.training import TrainConfig, train_model


@pytest.fixture(scope="module")
def fundus_pairs(retina):
    """24x24 patches from two disjoint parts of the real fundus photograph, sigma-25 noisy copies."""
    def cut(region):
        patches = [region[y : y + 24, x : x + 24] for y in range(0, region.shape[0] - 24, 12) for x in range(0, region.shape[1] - 24, 12)]
        clean = np.stack(patches)
        noisy = np.stack([corrupt(p, {"kind": "gaussian", "sigma": 25}, [0, i])[0] for i, p in enumerate(clean)])
        return clean, noisy

    return cut(retina[500:680, 300:600]), cut(retina[800:900, 700:900])


def _train(tmp_path, pairs, name, **overrides):
    cfg = TrainConfig(model="redae", max_steps=24, val_every=8, ckpt_every=8, batch_size=16, progress_bar=False, seed=3, **overrides)
    out = tmp_path / name
    metrics = train_model(cfg, pairs[0], pairs[1], out, tmp_path / f"ckpt-{name}")
    return out, metrics


def test_training_improves_on_the_noisy_input_and_writes_outputs(tmp_path, fundus_pairs):
    out, metrics = _train(tmp_path, fundus_pairs, "a", lr=1e-3)
    clean, noisy = fundus_pairs[1]
    noisy_psnr = np.mean([10 * np.log10(255**2 / np.mean((c.astype(float) - n) ** 2)) for c, n in zip(clean, noisy)])
    assert metrics["best_val_psnr"] > noisy_psnr + 2
    assert sorted(p.name for p in out.iterdir()) == ["curve.csv", "metrics.json", "model.json", "model.safetensors"]
    curve = (out / "curve.csv").read_text().splitlines()
    assert curve[0] == "step,train_loss,lr,val_loss,val_psnr" and len(curve) > 3


def test_same_params_give_byte_identical_outputs(tmp_path, fundus_pairs):
    a, _ = _train(tmp_path, fundus_pairs, "a")
    b, _ = _train(tmp_path, fundus_pairs, "b")
    for name in ("model.safetensors", "metrics.json", "curve.csv", "model.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_exploding_loss_stops_with_a_clear_error(tmp_path, fundus_pairs):
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        _train(tmp_path, fundus_pairs, "c", lr=1e8, schedule="constant")
    assert not (tmp_path / "c" / "model.safetensors").exists()
