"""corrupt TASK: degraded train/val patches and full-size degraded test images for one task. The stage:
medrestore.pipeline.corrupt."""

from medrestore.pipeline.corrupt import main
from medrestore.pipeline.stage import execute

if __name__ == "__main__":
    execute(main)
