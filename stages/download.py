"""download: gather the configured sources into artifacts/sources/ with one manifest. The stage:
medrestore.pipeline.download."""

from medrestore.pipeline.download import main
from medrestore.pipeline.stage import execute

if __name__ == "__main__":
    execute(main)
