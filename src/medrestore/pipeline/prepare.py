"""prepare: FOV masks, border/centre crop and resize of every source image."""

from __future__ import annotations

from medrestore.core.io import atomic_dir, read_json
from medrestore.data.prepare import prepare_sources
from medrestore.pipeline.paths import PREPARED, SOURCES
from medrestore.pipeline.stage import params, run
from medrestore.tracking.runs import log_datasets, tag_outputs


def main(argv: list[str] | None = None) -> None:
    all_p = params()
    p = all_p["prepare"]
    with run("prepare", p, all_p) as tracker:
        log_datasets(tracker, [SOURCES], "source")
        with atomic_dir(PREPARED) as tmp:
            result = prepare_sources(
                read_json(SOURCES / "manifest.json"), SOURCES, tmp, size=p["size"], mode=p["mode"],
                fov_threshold=p["fov_threshold"], grey=bool(p.get("grey", False)),
            )
        tracker.log_metrics({"images": len(result["images"])})
        tag_outputs(tracker, [PREPARED])
