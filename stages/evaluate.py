"""evaluate TASK: restore the test images with every model and baseline of one task and score them. The stage:
medrestore.pipeline.evaluate."""

from medrestore.pipeline.evaluate import main
from medrestore.pipeline.stage import execute

if __name__ == "__main__":
    execute(main)
