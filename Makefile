# `make run` and `make test` work from a fresh clone: both create .venv and install on first use
# (run: the runtime dependencies only; test: with the dev extra).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= examples/tripwire.yml

.PHONY: run test lint format bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit("tripwire needs Python 3.11+") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.run-stamp: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	@touch $@

$(VENV)/.dev-stamp: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@ $(VENV)/.run-stamp

run: $(VENV)/.run-stamp
	$(BIN)/tripwire up --demo -c $(CONFIG)

test: lint
	$(BIN)/python -m pytest

lint: $(VENV)/.dev-stamp
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.dev-stamp
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(VENV)/.run-stamp
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/ingest_memory.py
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/evaluator.py
	$(BIN)/python bench/notify.py
	$(BIN)/python bench/killswitch.py

clean:
	rm -rf $(VENV) .tripwire .pytest_cache .ruff_cache
