"""train RUN: train, fine-tune or chain one run of params.yaml (train.runs, train.finetune, train.chains). The stage:
medrestore.pipeline.train."""

from medrestore.pipeline.stage import execute
from medrestore.pipeline.train import main

if __name__ == "__main__":
    execute(main)
