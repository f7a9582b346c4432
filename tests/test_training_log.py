"""What a log shows of training (a process whose output is a pipe, as under `dvc repro` off a terminal):
progress lines with step/total, loss, the last validation PSNR, speed and ETA; one result line per run;
none of the third-party tips and warnings that used to repeat in every stage (Lightning's litlogger tip,
torch's scheduler-order warning from the GAN pre-training, MLflow's type-hint advice on the pyfunc)."""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
import warnings
from pathlib import Path

from conftest import subprocess_env

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys
import numpy as np
from skimage import data
sys.path.insert(0, {tests!r})
from conftest import cut_patches, noisy_copies
from medrestore.training.config import TrainConfig
from medrestore.training.engine import train_model

retina = data.retina()
def pairs(region, scale=1):
    clean = cut_patches(region, 24, 12)
    noisy = noisy_copies(clean, 0)
    return clean, noisy[:, ::scale, ::scale] if scale > 1 else noisy

from pathlib import Path
out = Path(sys.argv[1])
common = dict(val_every=20, batch_size=16, progress_bar=False, seed=3, ckpt_every=1000)
# a paired denoiser (60 steps) and an SRGAN whose generator pre-trains for 8 steps before the adversarial ones
train_model(TrainConfig(model="redae", max_steps=60, lr=1e-3, **common),
            pairs(retina[500:679, 300:599]), pairs(retina[800:899, 700:899]), out / "redae", out / "ckpt",
            run="log-redae")
sr = dict(max_steps=16, lr=1e-4, pretrain_steps=8, adv_weight=1e-3, model_kwargs={{"n_blocks": 1, "features": 8}},
          disc_kwargs={{"features": 8, "dense": 16}}, **{{**common, "val_every": 8, "batch_size": 4}})
train_model(TrainConfig(model="srgan", **sr), pairs(retina[500:600, 300:420], 2), pairs(retina[800:860, 700:800], 2),
            out / "srgan", out / "ckpt", run="log-srgan")
"""

PROGRESS = re.compile(r"^\[medrestore\] log-redae: step (\d+)/60 \(\d+%\), loss [0-9.e-]+(?:, val PSNR ([0-9.]+) dB "
                      r"at step (\d+))?, [0-9.]+ steps/s(?:, ETA \d+(?:s|m\d\ds))?$", flags=re.M)
RESULT = re.compile(r"^\[medrestore\] log-(redae|srgan): trained (\d+) steps in \d+s; best val PSNR [0-9.]+ dB at "
                    r"step \d+, final [0-9.]+ dB; (?:converged|not converged \(.+\))$", flags=re.M)


def test_a_training_run_off_a_terminal_logs_progress_and_no_repeated_tips(tmp_path):
    env = {**subprocess_env(), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", SCRIPT.format(tests=str(REPO / "tests")), str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=300)  # pipes: not a terminal
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-4000:]
    progress = [m for m in PROGRESS.finditer(res.stdout)]
    steps = [int(m.group(1)) for m in progress]
    # every 5% of the steps (or minute)
    assert steps == sorted(steps) and steps[-1] == 60 and 5 <= len(steps) <= 25, res.stdout
    assert any(m.group(2) and int(m.group(3)) in (20, 40) for m in progress)  # the last validation, once there is one
    assert "ETA" in progress[0].group(0) and "ETA" not in progress[-1].group(0)
    assert [(m.group(1),
             m.group(2)) for m in RESULT.finditer(res.stdout)] == [("redae", "60"), ("srgan", "16")], res.stdout
    assert re.search(r"log-srgan: step 16/16", res.stdout)
    for noise in ("💡 Tip", "litlogger", "lr_scheduler.step()", "Add type hints", "Downloading artifacts"):
        assert noise not in log, (noise, log[-4000:])
    assert "Warning" not in res.stderr, res.stderr[-4000:]


def test_the_pyfunc_predict_is_typed_so_mlflow_gives_no_type_hint_advice():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runpy.run_path(str(REPO / "src" / "medrestore" / "serving" / "mlflow_pyfunc.py"))
    assert not [w for w in caught if "type hint" in str(w.message).lower()], [str(w.message) for w in caught]


def test_the_tracked_data_folder_is_not_empty_so_dvc_does_not_warn_about_it(tmp_path):
    """data.dvc records data/ as it is in a fresh clone after `make repro`'s first line (one empty
    hidden `.keep`, which the folder source skips): a stage depending on data/ runs without DVC's
    "'data' is empty" warning, which an empty tracked folder gave on every such stage."""
    import yaml

    dvc = str(Path(sys.executable).parent / "dvc")
    env = subprocess_env()

    def run(*cmd):
        res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout + res.stderr

    run("git", "init", "-q")
    run(dvc, "init", "-q")
    make_line = next(line for line in (REPO / "Makefile").read_text().splitlines() if "touch data/.keep" in line)
    run("sh", "-c", make_line.strip().lstrip("@").split("#")[0])
    run(dvc, "add", "-q", "data")
    assert yaml.safe_load((tmp_path / "data.dvc").read_text()) == yaml.safe_load((REPO / "data.dvc").read_text())
    (tmp_path / "dvc.yaml").write_text(
        yaml.safe_dump({"stages": {"download": {"cmd": "ls -A data > out.txt", "deps": ["data"], "outs": ["out.txt"]}}})
    )
    log = run(dvc, "repro")
    assert "Running stage 'download'" in log and "is empty" not in log, log


def test_a_stage_off_a_terminal_ends_with_one_result_line_and_no_mlflow_download_bars():
    code = ("import os\nfrom medrestore.pipeline.stage import execute\n"
            "execute(lambda argv: print('bars', os.environ.get('MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR')))\n")
    env = {**subprocess_env(), "DVC_STAGE": "evaluate@denoise-g25"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["bars false", "[medrestore] evaluate@denoise-g25: done in 0s"]
