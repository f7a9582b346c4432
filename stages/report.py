"""report: reports/index.html, reports/report.md, reports/metrics.json and figures."""

from pathlib import Path

from _common import params, run

from medrestore.report import build_report


def main() -> None:
    p = params()
    tasks = sorted(p["corrupt"]["tasks"])
    with run("report", {"tasks": tasks}):
        build_report(p, tasks, Path("artifacts/eval"), Path("artifacts/patches"), Path("artifacts/models"), Path("reports"))


if __name__ == "__main__":
    main()
