"""train RUN: train one (task, model) pair of params.yaml's train.runs, fine-tune one of train.finetune
(the network starts from the weights of the trained model named by ``init``), or train one of train.chains
(Hayee2017's pipeline: a trained run's model, frozen, then a bicubic reduction, then the trained
network; saved as one model in artifacts/models/TASK/METHOD).

Settings merge, later wins: train.defaults <- train.models[model] (the paper's recipe) <-
train.profiles[profile].defaults <- train.profiles[profile].models[model] (the budget) <-
train.runs[RUN].overrides. ``train.profile`` picks the profile (quick | standard | paper).
"""

import os
import tempfile
from pathlib import Path

import numpy as np
from _common import arg, params, run

from medrestore.data.patches import load_patches
from medrestore.io import InputError, atomic_dir, read_json
from medrestore.lineage import tag_outputs
from medrestore.training import TrainConfig, train_model
from medrestore.training.chain import assemble_chain, chain_pairs


def merged_params(train: dict, key: str, seed: int) -> dict:
    entry = run_entry(train, key)
    name = train.get("profile", "standard")
    profiles = train.get("profiles", {})
    if name not in profiles:
        raise InputError(f"params.yaml: train.profile is {name!r}, not one of train.profiles ({', '.join(profiles)}).")
    profile = profiles[name] or {}
    model = entry["model"]
    return {
        **train["defaults"],
        **(train.get("models", {}).get(model) or {}),
        **(profile.get("defaults") or {}),
        **((profile.get("models") or {}).get(model) or {}),
        **(entry.get("overrides") or {}),
        **({"init_from": f"artifacts/models/{entry['init']}"} if "init" in entry else {}),
        "model": model,
        "seed": seed,
    }


def run_entry(train: dict, key: str) -> dict:
    groups = {"runs": train["runs"], "finetune": train.get("finetune") or {}, "chains": train.get("chains") or {}}
    for entries in groups.values():
        if key in entries:
            return entries[key]
    known = [k for entries in groups.values() for k in entries]
    raise InputError(f"params.yaml: no train.runs.{key}, train.finetune.{key} or train.chains.{key}. Fix: use one of {', '.join(known)}.")


def main() -> None:
    key = arg(1)
    all_p = params()
    entry = run_entry(all_p["train"], key)
    cfg_params = merged_params(all_p["train"], key, all_p["seed"])
    cfg = TrainConfig.from_params(cfg_params)
    patches, corrupted = Path("artifacts/patches"), Path("artifacts/corrupt") / entry["task"]
    corruption = read_json(corrupted / "corruption.json")
    domain = np.load(corrupted / "train_domain.npy") if corruption.get("unpaired") else None
    out = Path("artifacts/models") / entry["task"] / entry.get("method", entry["model"])
    train_pairs = (load_patches(patches, "train"), load_patches(corrupted, "train"))
    val_pairs = (load_patches(patches, "val"), load_patches(corrupted, "val"))
    first_dir = None
    if "first" in entry:  # a chain: the trained network learns from the first model's reduced outputs
        first_dir = Path("artifacts/models") / entry["task"] / entry["first"]
        train_pairs, val_pairs = chain_pairs(first_dir, key, train_pairs, val_pairs, int(entry["downscale"]),
                                             entry.get("subset"), all_p["seed"])
    data = {
        "train_pairs": train_pairs,
        "val_pairs": val_pairs,
        "ckpt_dir": Path(".cache/train") / key,
        "extra_meta": {"task": entry["task"]},
        "train_domain": domain,
        "run": f"train@{key}",
    }
    if not is_rank_zero():
        # DDP: Lightning's launcher and torchrun run this script once per process. Only rank 0 opens
        # the MLflow run and swaps the outputs into place; the others train into a throwaway folder.
        with tempfile.TemporaryDirectory() as scratch:
            train_model(cfg, out_dir=Path(scratch), tracker=None, **data)
        return
    with run(f"train@{key}", {"task": entry["task"], "profile": all_p["train"].get("profile", "standard"), **cfg_params}) as tracker:
        with atomic_dir(out) as tmp:
            train_model(cfg, out_dir=tmp, tracker=tracker, **data)
            if first_dir is not None:
                assemble_chain(first_dir, tmp, int(entry["downscale"]), extra={"first": str(first_dir)})
        tag_outputs(tracker, [out])


def is_rank_zero() -> bool:
    """False in the extra processes of a DDP run (RANK, LOCAL_RANK or NODE_RANK set and not 0)."""
    return all(os.environ.get(v, "0") == "0" for v in ("RANK", "LOCAL_RANK", "NODE_RANK"))


if __name__ == "__main__":
    main()
