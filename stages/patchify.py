"""patchify: split by image (or region) and cut train/val patches inside the FOV. The stage:
medrestore.pipeline.patchify."""

from medrestore.pipeline.patchify import main
from medrestore.pipeline.stage import execute

if __name__ == "__main__":
    execute(main)
