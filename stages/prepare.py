"""prepare: FOV masks, border/centre crop and resize of every source image."""

from pathlib import Path

from _common import params, run

from medrestore.data.prepare import prepare_sources
from medrestore.io import atomic_dir, read_json

SRC, OUT = Path("artifacts/sources"), Path("artifacts/prepared")


def main() -> None:
    p = params()["prepare"]
    with run("prepare", p) as tracker, atomic_dir(OUT) as tmp:
        result = prepare_sources(
            read_json(SRC / "manifest.json"), SRC, tmp, size=p["size"], mode=p["mode"],
            fov_threshold=p["fov_threshold"], grey=bool(p.get("grey", False)),
        )
        tracker.log_metrics({"images": len(result["images"])})


if __name__ == "__main__":
    main()
