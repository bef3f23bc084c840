# Two entry points: `make run` (set up, then start the bot) and `make test` (set up, lint, test).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint format setup

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

setup: $(VENV)/.installed

run: setup
	$(BIN)/python -m bot

lint: setup
	$(BIN)/ruff format --check bot model training tests benchmarks
	$(BIN)/ruff check bot model training tests benchmarks
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format bot model training tests benchmarks
	$(BIN)/ruff check --fix bot model training tests benchmarks

test: lint
	$(BIN)/python -m pytest -p no:cacheprovider
