# Axon — one entry point for install, models, tests, serving and benchmarks.
# `make serve` and `make test` work on a fresh clone (they install what they need).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MODELS_DIR ?= exported_models
HOST ?= 127.0.0.1
PORT ?= 8000
export AXON_MODELS_DIR ?= $(MODELS_DIR)

.DEFAULT_GOAL := help
.PHONY: help install models serve test test-unit test-integration test-e2e lint typecheck \
        format bench clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned to 2.13.0 (CPU wheel on this machine); see README for CUDA builds.
	$(PY) -m pip install -q -e ".[train,dev]"
	@touch $@

install: $(VENV)/.installed ## create .venv with everything to train, serve and test

models: install ## build the default model repository (digits-cnn, sunspots-lstm, digits-gan)
	$(PY) -m training models --models-dir $(MODELS_DIR)

serve: models ## serve everything locally: Redis, the model services, the gateway on :8000
	$(PY) -m services.cli serve --host $(HOST) --port $(PORT) --models-dir $(MODELS_DIR)

lint: install ## ruff (lint + format check)
	$(VENV)/bin/ruff check training services tests scripts benchmarks
	$(VENV)/bin/ruff format --check training services tests scripts benchmarks

format: install ## apply ruff formatting and fixes
	$(VENV)/bin/ruff check --fix training services tests scripts benchmarks
	$(VENV)/bin/ruff format training services tests scripts benchmarks

typecheck: install ## mypy --strict on training and services
	$(VENV)/bin/mypy

test: install lint typecheck ## the whole suite: lint, types, unit, integration, e2e
	$(PY) -m pytest -q

test-unit: install
	$(PY) -m pytest -q tests/unit

test-integration: install
	$(PY) -m pytest -q tests/integration

test-e2e: install
	$(PY) -m pytest -q tests/e2e

clean: ## remove caches and training runs (keeps .venv and exported_models)
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

-include mk/*.mk
