# Two entry points: `make run` (set up, then start the bot) and `make test` (set up, lint, test).
# `make compose-check` builds and runs the Docker image for real (not part of `make test`);
# `make slim-check` builds the slim image (compiled versions only) and runs it in 512 MB.
# `make cluster-check` runs the bot on a Ray Serve cluster (docker compose's `cluster` profile).
# `make run` and `make test` install everything: the serving dependencies, `train`, `cluster`
# and `test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Exact versions of everything installed, here and in the Dockerfile.
CONSTRAINTS := constraints.txt

.PHONY: run test lint format setup constraints compose-check slim-check cluster-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --constraint $(CONSTRAINTS) --upgrade pip

# torch first: the CPU build where it fits (scripts/install_torch.py), else PyPI's with the rest.
$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) scripts/install_torch.py | $(BIN)/python
	$(BIN)/python scripts/install_torch.py $(BIN)/pip
	$(BIN)/pip install --quiet --constraint $(CONSTRAINTS) -e ".[train,test,cluster]"
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
	$(BIN)/ruff format --check bot sandbox model training tests benchmarks scripts
	$(BIN)/ruff check bot sandbox model training tests benchmarks scripts
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format bot sandbox model training tests benchmarks scripts
	$(BIN)/ruff check --fix bot sandbox model training tests benchmarks scripts

test: lint
	$(BIN)/python -m pytest -p no:cacheprovider

# After changing dependencies in pyproject.toml: install them (what is installed stays as it is)
# and record every version in constraints.txt (local labels such as +cpu dropped).
constraints: | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[train,test,cluster]"
	{ grep '^#' $(CONSTRAINTS); $(BIN)/pip freeze --all --exclude-editable \
	  | grep -v -i -E '^verdict(==| @)' | sed -E 's/\+[A-Za-z0-9.]+$$//'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

# Build the image, run it with docker compose against a sandbox on this machine, check it;
# "skipped: ..." where no Docker engine can run.
compose-check: $(VENV)/.installed
	scripts/compose-check.sh

# Build the slim image (serves compiled versions: no torch, no fastai), run it with 512 MB and
# one CPU against a sandbox on this machine, send it 100 photos; "skipped: ..." without Docker.
slim-check: $(VENV)/.installed
	scripts/slim-check.sh

# Build the cluster image (a Ray node, no torch) and the slim bot, start the `cluster` profile
# (a head, two workers, the bot without local workers) against a sandbox on this machine, send
# photos, restart the head, stop; prints sizes, start times and memory. "skipped: ..." without
# Docker.
cluster-check: $(VENV)/.installed
	scripts/cluster-check.sh
