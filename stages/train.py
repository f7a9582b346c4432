"""train RUN: train one (task, model) pair of params.yaml's train.runs."""

from pathlib import Path

from _common import arg, params, run

from medrestore.data.patches import load_patches
from medrestore.io import atomic_dir
from medrestore.training import TrainConfig, train_model


def main() -> None:
    key = arg(1)
    all_p = params()
    t = all_p["train"]
    entry = t["runs"][key]
    cfg_params = {**t["defaults"], **t["models"][entry["model"]], **entry.get("overrides", {}), "model": entry["model"], "seed": all_p["seed"]}
    cfg = TrainConfig.from_params(cfg_params)
    patches, corrupted = Path("artifacts/patches"), Path("artifacts/corrupt") / entry["task"]
    out = Path("artifacts/models") / entry["task"] / entry["model"]
    with run(f"train@{key}", {"task": entry["task"], **cfg_params}) as tracker, atomic_dir(out) as tmp:
        train_model(
            cfg,
            (load_patches(patches, "train"), load_patches(corrupted, "train")),
            (load_patches(patches, "val"), load_patches(corrupted, "val")),
            tmp,
            ckpt_dir=Path(".cache/train") / key,
            tracker=tracker,
            extra_meta={"task": entry["task"]},
        )


if __name__ == "__main__":
    main()
