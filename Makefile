# The two commands a new machine needs: `make run` and `make test` (README).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# PostgreSQL and Redis for the second test pass (production-like); CI starts them.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/recsite
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: install run test test-embedded test-postgres bench bench-quick bench-ingest bench-recommendations bench-dashboard constraints clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/python scripts/run_embedded.py

# Both passes: SQLite + the file-system broker, then PostgreSQL + Redis.
test: test-embedded test-postgres

test-embedded: install
	env -u DATABASE_URL -u CELERY_BROKER_URL -u REDIS_URL $(BIN)/python -m pytest $(PYTEST_ARGS)

test-postgres: install
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_REDIS_URL) REDIS_URL=$(TEST_REDIS_URL) \
		$(BIN)/python -m pytest $(PYTEST_ARGS)

# Every benchmark, one after another -> bench/results/latest.json and BENCHMARKS.md (bench/run_all.py).
# Needs PostgreSQL, Redis, wrk (apt-get install wrk) and ../shared/datasets (or RECSITE_DATASETS).
bench: install
	$(BIN)/python bench/run_all.py

# The same harness at smoke sizes (CI): checks it works and writes latest.json; asserts no speed.
bench-quick: install
	$(BIN)/python bench/run_all.py --quick

# Events/s through POST /api/v1/events/ on PostgreSQL under gunicorn -> bench/results/ingest_api.json
bench-ingest: install
	$(BIN)/python bench/ingest_api.py

# GET /api/v1/recommendations/ latency (model, category, popular) under gunicorn -> bench/results/recommendations_api.json
bench-recommendations: install
	$(BIN)/python bench/recommendations_api.py $(BENCH_ARGS)

# Server time of every dashboard page on the demo shop (SQLite) -> bench/results/dashboard_pages_sqlite.json
bench-dashboard: install
	env -u DATABASE_URL -u CELERY_BROKER_URL -u REDIS_URL $(BIN)/python bench/dashboard_pages.py $(BENCH_ARGS)

constraints: install
	( head -2 constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu$$//' ) > constraints.new
	mv constraints.new constraints.txt

clean:
	rm -rf var/test
