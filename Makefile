# riskmon - what a new user runs. `make test` on a fresh machine does all set-up.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
VENV_STAMP := $(VENV)/.riskmon-installed
STACK_DIR ?= $(CURDIR)/.stack/dev
PYTEST_ARGS ?=
export PYTEST_ARGS PYTEST_TIMEOUT LINT
PYTEST_TIMEOUT ?= 600
LINT ?= 1
ARGS ?=

.PHONY: help venv deps stack-up stack-down stack-logs test lint demo bench clean

help:
	@echo "make test        set up everything (Debian deps, .venv, Kafka+Redis), lint, pytest"
	@echo "                 PYTEST_ARGS='tests/integration -k kafka'  LINT=0  PYTEST_TIMEOUT=600"
	@echo "make venv        .venv with python3.11 and pip install -e '.[dev]'"
	@echo "make deps        apt-get install what is missing (redis, prometheus, alertmanager, java, maven)"
	@echo "make lint        ruff check, ruff format --check, mypy, lint-imports"
	@echo "make stack-up    Kafka + Redis for manual use; then: . .stack/dev/env.sh"
	@echo "make stack-down  stop it (by PID)"
	@echo "make demo ARGS=  riskmon demo ...      make bench   riskmon bench engine"

# Re-installs only when pyproject.toml changed (stamp file).
venv: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q -e '.[dev]'
	@touch $@

deps:
	@ops/deps.sh

stack-up: deps venv
	@PYTHON=$(CURDIR)/$(VENV)/bin/python ops/stack.sh up $(STACK_DIR)

stack-down:
	@ops/stack.sh down $(STACK_DIR)

stack-logs:
	@ops/stack.sh logs $(STACK_DIR)

# deps + venv + stack up + lint + pytest; the stack is stopped by a trap in
# ops/run-tests.sh even when tests fail; pytest's exit code is preserved.
test: deps venv
	@VENV=$(CURDIR)/$(VENV) ops/run-tests.sh

# All three checks run; the target fails if any of them does.
lint: venv
	@rc=0; \
	echo "+ ruff check streams tests"; $(VENV)/bin/ruff check streams tests || rc=1; \
	echo "+ ruff format --check streams tests"; $(VENV)/bin/ruff format --check streams tests || rc=1; \
	echo "+ mypy"; $(VENV)/bin/mypy || rc=1; \
	echo "+ lint-imports"; $(VENV)/bin/lint-imports || rc=1; \
	exit $$rc

demo: venv
	$(VENV)/bin/riskmon warm-up
	$(VENV)/bin/riskmon demo $(ARGS)

bench: venv
	$(VENV)/bin/riskmon warm-up
	$(VENV)/bin/riskmon bench engine $(ARGS)

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis
