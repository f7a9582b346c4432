# Two entry points: `make repro` (whole pipeline on the embedded default) and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: repro quick test lint install bench screenshot clean-venv mlflow-server mlflow-server-stop queue exp-show

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip==26.3"
	$(BIN)/python -m pip install --quiet --no-deps --requirement requirements.lock  # exactly the lock (tools/lock.py)
	$(BIN)/python -m pip install --quiet --no-deps --editable .
	@touch $(STAMP)

install: $(STAMP)

repro: $(STAMP)
	@mkdir -p data && touch data/.keep  # data/ (your own images, tracked by data.dvc): only the empty .keep in a fresh clone
	$(BIN)/python -m medrestore.cli check-params  # before DVC removes any stage's outputs
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

# The quick tour: every stage from nothing in a copy (quick-tour/), undertrained models, in minutes.
quick: $(STAMP)
	$(BIN)/python -m medrestore.cli check-params
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python tools/quick_tour.py

# Queued experiments (`dvc exp run --queue -S ...`, then `make queue J=2`) log through the repository's local
# MLflow tracking server (MLflow's recommendation for concurrent writers); it keeps running for `mlflow ui`
# until `make mlflow-server-stop`.
J ?= 2
mlflow-server: $(STAMP)
	$(BIN)/python tools/mlflow_server.py start

mlflow-server-stop:
	$(BIN)/python tools/mlflow_server.py stop

# tools/exp_queue.py: starts the server and the workers, waits for the queue to empty, queues again (up to
# twice) an experiment DVC's own queue dropped, stops the idle workers, prints one line per experiment.
queue: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python tools/exp_queue.py -j $(J)

# The experiments' headline (docs/tracking.md): `dvc exp show` narrowed to reports/headline.json's columns (plain
# `dvc exp show` lists every parameter and code dependency); KEEP='train\.models\.redae\.lr$$' adds columns.
exp-show: $(STAMP)
	$(BIN)/dvc exp show --drop '.*' --keep "$$($(BIN)/python -m medrestore.pipeline.views --keep)$(if $(KEEP),|$(KEEP))"

# The linter (pinned in requirements.lock, configured in pyproject.toml): lines up to 120 characters, imports sorted,
# pyflakes, bugbear and pyupgrade findings; CI runs it before the tests (tests/test_lint.py runs it too).
lint: $(STAMP)
	$(BIN)/ruff check --no-cache .

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

# Speed and memory figures -> reports/bench.json, reports/bench.md (BENCH_ARGS=--quick: CI's reduced size).
bench: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m benchmarks.bench $(BENCH_ARGS)

# The README's picture of the published report (needs Debian's `chromium`).
screenshot: $(STAMP)
	$(BIN)/python -c "from medrestore.report import browser_check; r = browser_check('reports/index.html', 'docs/report.png', width=1200, height=1500); print(len(r['images']), 'images,', len(r['tables']), 'tables')"

clean-venv:
	rm -rf $(VENV)
