"""evaluate_external TASK: the task's models and baselines on photographs from other cameras. The stage:
medrestore.pipeline.evaluate_external."""

from medrestore.pipeline.evaluate_external import main
from medrestore.pipeline.stage import execute

if __name__ == "__main__":
    execute(main)
