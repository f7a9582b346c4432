"""download: gather the configured sources into artifacts/sources/ with one manifest."""

from pathlib import Path

from _common import params, run

from medrestore.data.sources import gather
from medrestore.io import atomic_dir, write_json_atomic

OUT = Path("artifacts/sources")


def main() -> None:
    p = params()["download"]
    with run("download", p) as tracker, atomic_dir(OUT) as tmp:
        records = gather(
            p["sources"], tmp, mirror=Path(p["mirror"]), folder=Path(p["folder"]),
            cache_dir=Path(".cache/downloads"), allow_network=bool(p["allow_network"]),
            allow_unverified=bool(p.get("allow_unverified", False)),
        )
        write_json_atomic(tmp / "manifest.json", {"images": [r.as_dict(tmp) for r in records]})
        tracker.log_metrics({"images": len(records)})


if __name__ == "__main__":
    main()
