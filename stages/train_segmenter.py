"""train_segmenter: the U-Net vessel segmenter on the clean training images that have manual masks
(Frangi stands in when there are none); writes artifacts/segmenter/{model.safetensors,model.json,metrics.json}."""

from pathlib import Path

from _common import params, run

from medrestore.io import atomic_dir, read_json
from medrestore.lineage import tag_outputs
from medrestore.vessels import train_segmenter_stage

OUT = Path("artifacts/segmenter")


def main() -> None:
    all_p = params()
    p = all_p["segmenter"]
    with run("train_segmenter", p) as tracker:
        with atomic_dir(OUT) as tmp:
            metrics = train_segmenter_stage(
                Path("artifacts/prepared"), read_json(Path("artifacts/patches") / "patches.json"), tmp, params=p, seed=all_p["seed"]
            )
        tag_outputs(tracker, [OUT])
        tracker.log_metrics({f"segmenter.{k}": v["mean"] for k, v in metrics.items() if isinstance(v, dict) and "mean" in v})


if __name__ == "__main__":
    main()
