# The two commands a new machine needs: `make run` and `make test` (README).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# PostgreSQL and Redis for the second test pass (production-like); CI starts them.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/recsite
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: help install run reset-demo test test-embedded test-postgres bench bench-quick bench-ingest bench-recommendations bench-dashboard constraints clean

# Each target's `## text` is its line in `make help`.
help: ## list the targets, one line each
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-z][a-z-]*:.*## / {printf "  %-22s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

install: $(VENV)/.installed ## create .venv and install the pinned dependencies (constraints.txt)

run: install ## migrate, seed a demo shop, serve web + worker + beat on PORT (default 8000)
	$(BIN)/python scripts/run_embedded.py

# Asks first; refuses while a `make run` uses var/, or when the database is not in var/.
reset-demo: install ## delete var/ (demo database, models, admin, API keys); the next `make run` seeds afresh
	$(BIN)/python scripts/run_embedded.py --reset-demo

# Both passes: SQLite + the file-system broker, then PostgreSQL + Redis.
test: test-embedded test-postgres ## the whole suite: SQLite + file broker, then PostgreSQL + Redis

test-embedded: install ## the SQLite pass only
	env -u DATABASE_URL -u CELERY_BROKER_URL -u REDIS_URL $(BIN)/python -m pytest $(PYTEST_ARGS)

test-postgres: install ## the PostgreSQL + Redis pass only
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_REDIS_URL) REDIS_URL=$(TEST_REDIS_URL) \
		$(BIN)/python -m pytest $(PYTEST_ARGS)

# Every benchmark, one after another -> bench/results/latest.json and BENCHMARKS.md (bench/run_all.py).
# Needs PostgreSQL, Redis, wrk (apt-get install wrk) and ../shared/datasets (or RECSITE_DATASETS).
bench: install ## every benchmark (about 70 minutes) -> bench/results/latest.json, BENCHMARKS.md
	$(BIN)/python bench/run_all.py

# The same harness at smoke sizes (CI): checks it works and writes latest.json; asserts no speed.
bench-quick: install ## the benchmarks at smoke sizes (CI; asserts no speed)
	$(BIN)/python bench/run_all.py --quick

# Events/s through POST /api/v1/events/ on PostgreSQL under gunicorn -> bench/results/ingest_api.json
bench-ingest: install ## events/s through the ingest API on PostgreSQL under gunicorn
	$(BIN)/python bench/ingest_api.py

# GET /api/v1/recommendations/ latency (model, category, popular) under gunicorn -> bench/results/recommendations_api.json
bench-recommendations: install ## recommendations API latency under gunicorn (BENCH_ARGS=...)
	$(BIN)/python bench/recommendations_api.py $(BENCH_ARGS)

# Server time of every dashboard page on the demo shop (SQLite) -> bench/results/dashboard_pages_sqlite.json
bench-dashboard: install ## server time of every dashboard page on the demo shop (SQLite)
	env -u DATABASE_URL -u CELERY_BROKER_URL -u REDIS_URL $(BIN)/python bench/dashboard_pages.py $(BENCH_ARGS)

constraints: install ## re-pin constraints.txt from what .venv has installed
	( head -2 constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu$$//' ) > constraints.new
	mv constraints.new constraints.txt

clean: ## delete the tests' runtime files (var/test)
	rm -rf var/test
