"""`make bench` sections (benchmarks/bench.py) run for real at a tiny size and report sane numbers
(no timing asserts)."""

import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

from benchmarks import bench  # noqa: E402


def test_inference_section_compares_tiled_untiled_and_optimisations():
    res = bench.bench_inference(["dncnn"], size=96, tile=48, repeats=1)
    r = res["models"]["dncnn"]
    assert r["bn_pairs_folded"] == 15  # DnCNN-17: 15 conv + BN pairs
    for key in ("untiled", "tiled", "bn_folded", "bn_folded_channels_last"):
        assert r[key] > 0
    assert r["tiling_overhead"] > -0.9


def test_super_resolution_networks_are_given_the_reduced_image():
    r = bench.bench_inference(["srresnet"], size=64, tile=32, repeats=1)["models"]["srresnet"]
    assert r["input_size"] == 16 and r["untiled"] > 0 and r["tiled"] > 0


def test_inference_section_can_time_torch_compile_after_compiling():
    res = bench.bench_inference(["cdae"], size=64, tile=32, repeats=1, compile=True)
    r = res["models"]["cdae"]
    assert r["compiled"] > 0 and r["compile_seconds"] > 0 and r["compiled_vs_bn_folded_channels_last"] > 0
    assert "torch.compile" in bench.markdown({"machine": {}, "mode": "test", "inference": res})


def test_training_section_times_every_step_of_engine_and_bare_loop(tmp_path):
    res = bench.bench_training(["cdae"], steps=6, batch=4, patch=32, repeats=2, warmup=2)
    r = res["models"]["cdae"]
    assert r["steps"] == 6 and set(r["patches_per_second"]) == {"ours", "bare"}
    assert len(r["wall_seconds"]["ours"]) == 2 and all(w > 0 for w in r["wall_seconds"]["bare"])
    assert 0 < r["step_ms_median"]["bare"] < 1e3 * min(r["wall_seconds"]["bare"])
    md = bench.markdown({"machine": {}, "mode": "test", "training": res})
    assert "| cdae | 6 |" in md


def test_step_clock_sees_every_optimiser_step():
    net = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with bench._StepClock() as clock:
        for _ in range(5):
            opt.zero_grad()
            net(torch.ones(2, 3)).sum().backward()
            opt.step()
    opt.step()  # after the clock is closed: not seen
    assert len(clock.stamps) == 5 and len(clock.steps()) == 4 and all(d >= 0 for d in clock.steps())


def test_training_section_lengthens_runs_of_fast_models(tmp_path):
    r = bench.bench_training(["cdae"], steps=2, batch=4, patch=32, min_seconds=0.5)["models"]["cdae"]
    assert r["steps"] >= 10 and r["steps"] % 10 == 0


def test_threads_section_times_each_thread_count_and_loader_workers():
    before = torch.get_num_threads()
    res = bench.bench_threads(["cdae"], size=64, repeats=1, train_models=["cdae"], steps=5, batch=4, patch=32,
                              threads=[1, 2], workers=(0, 1), pipeline_patches=5000)
    assert torch.get_num_threads() == before  # the thread count is restored
    assert set(res["inference_seconds_per_mpix"]["cdae"]) == {"1", "2", "speedup_max_vs_1"}
    r = res["training"]["cdae"]
    assert set(r["step_ms_by_threads"]) == {"1", "2"} and set(r["step_ms_by_workers"]) == {"0", "1"}
    assert all(v > 0 for v in [*r["step_ms_by_threads"].values(), *r["step_ms_by_workers"].values()])
    assert 0 < r["batch_fetch_share"] < 1 and r["sampler_ms_at_pipeline_size"] > 0
    md = bench.markdown({"machine": {}, "mode": "test", "threads": res})
    assert "| cdae |" in md and "1 workers" in md and "2 thread(s)" in md


def test_precision_section_times_bf16_autocast_and_its_fidelity(tmp_path):
    from medrestore.models import build_model, save_model

    torch.manual_seed(3)
    save_model(build_model("cdae"), tmp_path / "cdae", name="cdae", kwargs={})  # a saved network: the "trained" path
    res = bench.bench_precision(["cdae", "redae"], size=64, repeats=1, train_models=["cdae"], steps=5, batch=4,
                                patch=32, weights=tmp_path)
    r = res["inference"]["cdae"]
    assert r["float32"] > 0 and r["bf16_autocast"] > 0 and r["weights"] == str(tmp_path / "cdae")
    assert 25 < r["bf16_psnr_vs_float32_db"] < 200  # bf16 differs from float32, but not by much
    assert set(r["psnr_vs_clean_db"]) == {"noisy", "float32",
                                          "bf16_autocast"} and 15 < r["psnr_vs_clean_db"]["noisy"] < 25
    assert res["inference"]["redae"]["weights"] == "untrained" and "psnr_vs_clean_db" not in res["inference"]["redae"]
    t = res["training"]["cdae"]
    assert set(t["step_ms"]) == set(t["val_psnr"]) == {"32-true",
                                                       "bf16-mixed"} and all(v > 0 for v in t["step_ms"].values())
    md = bench.markdown({"machine": {}, "mode": "test", "precision": res})
    assert "bf16 autocast" in md and "| cdae |" in md


def test_batches_through_a_loader_with_workers_are_the_batches_indexed_in_the_loop():
    from medrestore.training.data import PairedPatches, StepBatchSampler

    clean = bench._patches(16, 24)
    ds, sampler = PairedPatches(clean, clean // 2), StepBatchSampler(16, 4, seed=1)
    direct = list(bench._batches(ds, sampler, 6, workers=None))
    loaded = list(bench._batches(ds, sampler, 6, workers=1))
    assert len(direct) == len(loaded) == 6  # 6 steps cross an epoch boundary (4 steps per epoch)
    for (x0, y0), (x1, y1) in zip(direct, loaded, strict=True):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
    assert not torch.equal(direct[0][0], direct[1][0])


def test_cpu_model_names_the_cpu_and_its_vector_extensions():
    cpu = bench.cpu_model()  # benchmarks/learning.py records it beside its timings
    assert set(cpu) == {"name", "isa", "torch_cpu_capability"} and cpu["name"] and isinstance(cpu["isa"], list)


def test_main_writes_json_and_markdown(tmp_path, assets_dir):
    assert bench.main(["--quick", "--only", "baselines", "--out", str(tmp_path), "--assets", str(assets_dir)]) == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["baselines"]["seconds_per_mpix"]["median"] > 0
    assert "Classical baselines" in (tmp_path / "bench.md").read_text()
    # --merge reruns one section into the existing file and keeps the others
    assert bench.main(["--quick", "--only", "dvc_noop", "--merge", "--out", str(tmp_path)]) == 0
    merged = json.loads((tmp_path / "bench.json").read_text())
    assert merged["baselines"] == data["baselines"] and "dvc_noop" in merged
    assert merged["section_modes"] == {"baselines": "quick", "dvc_noop": "quick"} and merged["mode"] == "quick"
    # the report's performance section shows the same figures
    from medrestore.report.performance import performance_section

    md, page = performance_section(data, "bench.json")
    assert "## Performance" in md and any(line.startswith("| median | ") for line in md)
    assert "<h2 id='performance'>Performance</h2>" in page and "<td>median</td>" in page


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_stage_times_splits_each_stage_into_its_run_and_the_gap_before_it():
    from benchmarks.stage_times import format_table, stage_rows

    runs = [("train@b", 20.0, 50.0), ("download", 2.0, 5.0)]  # any order: sorted by start
    rows = stage_rows(runs, since=0.0)
    assert [r["stage"] for r in rows] == ["download", "train@b"]
    assert rows[0] == {"stage": "download", "wall": 5.0, "in_run": 3.0, "between": 2.0}
    assert rows[1] == {"stage": "train@b", "wall": 45.0, "in_run": 30.0, "between": 15.0}
    assert stage_rows(runs)[0]["between"] == 0.0  # without --since the first process start is unknown
    text = format_table(rows, "t", tail=4.0)
    assert text.splitlines()[-1].split() == ["total", "54.0", "33.0", "21.0"]
    kept = stage_rows([*runs, ("train@x", 6.0, 15.0)], since=0.0, exclude=(("train@x", 6.0),))
    assert kept[0] == rows[0]  # a removed stage's run left out, with the time up to its end
    assert kept[1] == {"stage": "train@b", "wall": 35.0, "in_run": 30.0, "between": 5.0}
    with pytest.raises(ValueError, match="train@c started at 30.0, before the previous one ended"):
        stage_rows([*runs, ("train@c", 30.0, 60.0)], since=0.0)  # two workers' runs interleaved


def test_learning_benchmark_adds_gradient_clipping_and_callbacks_to_the_engines_trainer(monkeypatch, tmp_path):
    """benchmarks/learning.py --clip-grad-norm (a lever to measure, not a pipeline setting) reaches the Lightning
    trainer the engine builds, beside the snapshot callback, and only in that process's engine."""
    import pytorch_lightning as L

    from benchmarks import learning
    from medrestore.training import engine

    monkeypatch.setattr(engine, "make_trainer", engine.make_trainer)  # restored after the test

    class Marker(L.Callback):
        pass

    plain = engine.make_trainer(tmp_path, callbacks=[], max_steps=1, accelerator="cpu")
    assert plain.gradient_clip_val in (None, 0)
    learning._extend_trainer(callbacks=[Marker()])
    learning._clip_gradients(0.25)
    trainer = engine.make_trainer(tmp_path, callbacks=[], max_steps=1, accelerator="cpu")
    assert trainer.gradient_clip_val == 0.25
    assert trainer.gradient_clip_algorithm == "norm"
    assert any(isinstance(c, Marker) for c in trainer.callbacks)

    # and a clipped step really is clipped: one step of a linear model on a huge loss moves it by at most lr
    net = torch.nn.Linear(4, 1)

    class Fit(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = net

        def training_step(self, batch, _):
            return (self.net(batch[0]) - 1e6).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=1.0)

    before = torch.cat([p.detach().flatten().clone() for p in net.parameters()])
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(8, 4)), batch_size=8)
    engine.make_trainer(tmp_path, callbacks=[], max_steps=1, accelerator="cpu",
                        enable_progress_bar=False).fit(Fit(), data)
    after = torch.cat([p.detach().flatten() for p in net.parameters()])
    assert float((after - before).norm()) == pytest.approx(0.25, rel=1e-4)
