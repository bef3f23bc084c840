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

# The chat page's browser test drives Debian's Chromium (Playwright's own browser download
# needs the internet); installed here as root when missing, else those tests are skipped.
setup: $(VENV)/.installed
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update && apt-get install -y --no-install-recommends \
	      chromium chromium-driver fonts-noto-color-emoji; \
	  else \
	    echo "note: no /usr/bin/chromium: the chat page's browser tests will be skipped" \
	      "(run make setup as root, or apt-get install chromium chromium-driver)"; \
	  fi; \
	fi

run: setup
	$(BIN)/python -m bot

lint: setup
	$(BIN)/ruff format --check bot sandbox model training tests benchmarks
	$(BIN)/ruff check bot sandbox model training tests benchmarks
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format bot sandbox model training tests benchmarks
	$(BIN)/ruff check --fix bot sandbox model training tests benchmarks

test: lint
	$(BIN)/python -m pytest -p no:cacheprovider
