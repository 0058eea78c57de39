# The two commands of the README are `make demo` and `make test`; the rest are helpers.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo down status up-prod-local down-prod-local demo-prod-local compose-check test test-fast test-integration lint lock install clean

## install: a virtual environment from the lock file (redone when the lock changes)
install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	@# Airflow re-imports a lot per command: compiled bytecode saves seconds on every task.
	@PYTHONDONTWRITEBYTECODE= $(BIN)/python -m compileall -q -j 0 $(VENV)/lib >/dev/null 2>&1 || true
	@touch $(STAMP)

## demo: start MLflow and Airflow, seed the warehouse, run train_flights through Airflow, print a summary
demo: install
	$(BIN)/python -m pipelines.stack demo

## down: stop everything `make demo` started (state stays in runtime/)
down:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m pipelines.stack down; else echo "nothing to stop"; fi

status: install
	$(BIN)/python -m pipelines.stack status

## up-prod-local: the production topology with native processes (PostgreSQL, Redis, CeleryExecutor, 2 workers)
up-prod-local: install
	MLOPS_PROFILE=production $(BIN)/python -m pipelines.stack up

down-prod-local:
	@if [ -x $(BIN)/python ]; then MLOPS_PROFILE=production $(BIN)/python -m pipelines.stack down; fi

## demo-prod-local: `make demo` on that topology
demo-prod-local: install
	MLOPS_PROFILE=production $(BIN)/python -m pipelines.stack demo

## compose-check: validate docker-compose.yaml with the example env file (needs docker compose or docker-compose)
compose-check:
	@if docker compose version >/dev/null 2>&1; then docker compose --env-file .env.example config -q; \
	else docker-compose --env-file .env.example config -q; fi && echo "docker-compose.yaml: valid"

## test: the whole suite (unit, DAG integrity, integration with real services, end to end) on two workers:
## the demo's end-to-end run on one, the shared stack's modules on the other, the rest wherever there is room
XDIST := -n 2 --dist loadgroup --no-loadscope-reorder
test: install
	$(BIN)/python -m pytest -q --durations=40 $(XDIST) tests

## test-fast: unit tests and DAG integrity, no services (the inner loop)
test-fast: install
	$(BIN)/python -m pytest -q tests/unit tests/dags

## test-integration: the integration tests only (real Airflow, MLflow, GX, Evidently, databases)
test-integration: install
	$(BIN)/python -m pytest -q --durations=8 $(XDIST) tests/integration

lint: install
	$(BIN)/ruff check pipelines dags plugins tests
	$(BIN)/ruff format --check pipelines dags plugins tests
	$(BIN)/mypy

## lock: recompile requirements.lock from requirements.in
lock:
	$(BIN)/uv pip compile --quiet requirements.in -o requirements.lock

clean: down
	rm -rf runtime
