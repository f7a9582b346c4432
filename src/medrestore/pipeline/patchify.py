"""patchify: split by image (or region) and cut train/val patches inside the FOV."""

from __future__ import annotations

from medrestore.core.io import atomic_dir, read_json
from medrestore.data.patches import patchify
from medrestore.pipeline.paths import PATCHES, PREPARED
from medrestore.pipeline.stage import params, run
from medrestore.tracking.runs import log_datasets, tag_outputs


def main(argv: list[str] | None = None) -> None:
    all_p = params()
    p = all_p["patchify"]
    with run("patchify", p, all_p) as tracker:
        log_datasets(tracker, [PREPARED], "source")
        with atomic_dir(PATCHES) as tmp:
            summary = patchify(read_json(PREPARED / "manifest.json"), PREPARED, tmp, seed=all_p["seed"], **p)
        tracker.log_metrics({f"{k}_count": v for k, v in summary["counts"].items()})
        tag_outputs(tracker, [PATCHES])
