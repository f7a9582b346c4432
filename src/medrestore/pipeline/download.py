"""download: gather the configured sources into artifacts/sources/ with one manifest."""

from __future__ import annotations

from pathlib import Path

from medrestore.data.sources import gather
from medrestore.io import atomic_dir, write_json_atomic
from medrestore.pipeline.paths import SOURCES
from medrestore.pipeline.stage import params, run

DOWNLOAD_CACHE = Path(".cache") / "downloads"


def main(argv: list[str] | None = None) -> None:
    all_p = params()
    p = all_p["download"]
    with run("download", p, all_p) as tracker, atomic_dir(SOURCES) as tmp:
        records = gather(
            p["sources"], tmp, mirror=Path(p["mirror"]), folder=Path(p["folder"]),
            cache_dir=DOWNLOAD_CACHE, allow_network=bool(p["allow_network"]),
            allow_unverified=bool(p.get("allow_unverified", False)),
        )
        write_json_atomic(tmp / "manifest.json", {"images": [r.as_dict(tmp) for r in records]})
        tracker.log_metrics({"images": len(records)})
