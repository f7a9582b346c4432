"""patchify: split by image (or region) and cut train/val patches inside the FOV."""

from pathlib import Path

from _common import params, run

from medrestore.data.patches import patchify
from medrestore.io import atomic_dir, read_json

SRC, OUT = Path("artifacts/prepared"), Path("artifacts/patches")


def main() -> None:
    all_p = params()
    p = all_p["patchify"]
    with run("patchify", p) as tracker, atomic_dir(OUT) as tmp:
        summary = patchify(read_json(SRC / "manifest.json"), SRC, tmp, seed=all_p["seed"], **p)
        tracker.log_metrics({f"{k}_count": v for k, v in summary["counts"].items()})


if __name__ == "__main__":
    main()
