"""download: gather the configured sources into artifacts/sources/ with one manifest."""

from __future__ import annotations

from pathlib import Path

from medrestore.core.io import InputError, atomic_dir, list_images, repo_path, write_json_atomic
from medrestore.data.sources import gather
from medrestore.pipeline.paths import SOURCES
from medrestore.pipeline.stage import params, run
from medrestore.tracking.runs import log_datasets, tag_outputs

DOWNLOAD_CACHE = Path(".cache") / "downloads"


def check_folder_names(folder: Path) -> None:
    """Two images of ``folder`` that would become one source (the same path but for the extension,
    e.g. ``Image_11L.png`` and ``Image_11L.jpg``): an error naming both, before anything is gathered
    (each would otherwise overwrite the other's copy)."""
    seen: dict[str, Path] = {}
    for path in list_images(folder):
        key = path.relative_to(folder).with_suffix("").as_posix()
        if key in seen:
            raise InputError(f"{seen[key]} and {path}: two images with one name but for the extension would be one "
                             f"source (folder/{key.replace('/', '__')}). Fix: rename or remove one of them, then `dvc "
                             "add data`.")
        seen[key] = path


def main(argv: list[str] | None = None) -> None:
    all_p = params()
    p = all_p["download"]
    if "folder" in p["sources"] and Path(p["folder"]).is_dir():
        check_folder_names(Path(p["folder"]))
    with run("download", p, all_p) as tracker:
        if "folder" in p["sources"]:
            log_datasets(tracker, [Path(p["folder"])], "source")  # the DVC-tracked folder of one's own photographs
        with atomic_dir(SOURCES) as tmp:
            records = gather(
                p["sources"], tmp, mirror=repo_path(p["mirror"]), folder=Path(p["folder"]),
                cache_dir=DOWNLOAD_CACHE, allow_network=bool(p["allow_network"]),
                allow_unverified=bool(p.get("allow_unverified", False)),
                allow_partial=bool(p.get("allow_partial", False)),
            )
            write_json_atomic(tmp / "manifest.json", {"images": [r.as_dict(tmp) for r in records]})
        tracker.log_metrics({"images": len(records)})
        tag_outputs(tracker, [SOURCES])
