"""report: the published report (HTML, Markdown, metrics.json, claims.json, figures); the best converged model of each
task registered in MLflow. The stage: medrestore.pipeline.report."""

from medrestore.pipeline.report import main
from medrestore.pipeline.stage import execute

if __name__ == "__main__":
    execute(main)
