"""train_segmenter: the U-Net vessel segmenter on the clean training images with manual masks (Frangi where there are
none). The stage: medrestore.pipeline.train_segmenter."""

from medrestore.pipeline.stage import execute
from medrestore.pipeline.train_segmenter import main

if __name__ == "__main__":
    execute(main)
