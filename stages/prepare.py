"""prepare: FOV masks, border/centre crop and resize of every source image. The stage: medrestore.pipeline.prepare."""

from medrestore.pipeline.prepare import main
from medrestore.pipeline.stage import execute

if __name__ == "__main__":
    execute(main)
